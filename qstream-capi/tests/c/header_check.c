/* Compiled (not run) as C99 and as C++11 with -Wall -Wextra -Werror -pedantic by ctest:
 * the header is self-contained, survives double inclusion, and its version macros agree. */
#include "qstream.h"
#include "qstream.h" /* double inclusion is harmless */

#define QS_CHECK(name, cond) typedef char name[(cond) ? 1 : -1]

#define QS_STR2(x) #x
#define QS_STR(x) QS_STR2(x)
#define QS_COMPOSED QS_STR(QS_VERSION_MAJOR) "." QS_STR(QS_VERSION_MINOR) "." QS_STR(QS_VERSION_PATCH)

/* the composed version string equals QS_VERSION_STRING (catches a MINOR-for-PATCH slip) */
QS_CHECK(qs_version_len_matches, sizeof(QS_COMPOSED) == sizeof(QS_VERSION_STRING));
QS_CHECK(qs_version_major_nonneg, QS_VERSION_MAJOR >= 0);
QS_CHECK(qs_status_ok_is_zero, QS_STATUS_OK == 0);
QS_CHECK(qs_status_panic_900, QS_STATUS_PANIC == 900);
QS_CHECK(qs_params_start_with_size, sizeof(((qs_model_params *)0)->struct_size) == 4);
QS_CHECK(qs_token_is_32_bits, sizeof(qs_token) == 4);
QS_CHECK(qs_status_is_32_bits, sizeof(qs_status) == 4);

int qs_header_check(void);
int qs_header_check(void) {
    qs_model_params mp = qs_model_default_params();
    qs_piece_cb cb = 0;
    qs_log_cb lcb = 0;
    (void)cb;
    (void)lcb;
    return (int)mp.struct_size + (int)QS_ABI_VERSION + (int)QS_KV_F16 + (int)QS_QUANT_KEEP;
}
