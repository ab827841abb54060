# FindQStream.cmake — locate a prebuilt libqstream without a CMake config (an unpacked
# release, a wheel's data directory, ...). Hints: QStream_ROOT (variable or environment),
# QSTREAM_ROOT (environment).
#
# Defines QStream_FOUND, QStream_VERSION (from QS_VERSION_STRING in qstream.h),
# QStream_INCLUDE_DIRS, QStream_LIBRARIES and the imported target QStream::qstream.
find_path(QStream_INCLUDE_DIR qstream.h
  HINTS ${QStream_ROOT} ENV QStream_ROOT ENV QSTREAM_ROOT
  PATH_SUFFIXES include)
find_library(QStream_LIBRARY NAMES qstream
  HINTS ${QStream_ROOT} ENV QStream_ROOT ENV QSTREAM_ROOT
  PATH_SUFFIXES lib lib64)

if(QStream_INCLUDE_DIR AND EXISTS "${QStream_INCLUDE_DIR}/qstream.h")
  file(STRINGS "${QStream_INCLUDE_DIR}/qstream.h" _qs_ver REGEX "^#define QS_VERSION_STRING \"[^\"]*\"")
  string(REGEX REPLACE "^#define QS_VERSION_STRING \"([^\"]*)\".*" "\\1" QStream_VERSION "${_qs_ver}")
  unset(_qs_ver)
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(QStream
  REQUIRED_VARS QStream_LIBRARY QStream_INCLUDE_DIR
  VERSION_VAR QStream_VERSION)

if(QStream_FOUND)
  set(QStream_INCLUDE_DIRS "${QStream_INCLUDE_DIR}")
  set(QStream_LIBRARIES "${QStream_LIBRARY}")
  if(NOT TARGET QStream::qstream)
    add_library(QStream::qstream UNKNOWN IMPORTED)
    set_target_properties(QStream::qstream PROPERTIES
      IMPORTED_LOCATION "${QStream_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${QStream_INCLUDE_DIR}")
  endif()
endif()
mark_as_advanced(QStream_INCLUDE_DIR QStream_LIBRARY)
