//! Chat templates: render a conversation into a prompt with the model's Jinja template.
//!
//! HuggingFace `apply_chat_template` semantics, on [minijinja]:
//! - variables `messages` (list of `{role, content}` maps), `add_generation_prompt`,
//!   `bos_token`, `eos_token`, and `tools` / `documents` set to `none`;
//! - `trim_blocks` and `lstrip_blocks` on, trailing newline dropped (as HF's environment);
//! - `raise_exception(msg)` (fails the render with `msg`), `strftime_now(fmt)`;
//! - `tojson` as Python's `json.dumps(x, ensure_ascii=False, indent=None, sort_keys=False)`
//!   (no HTML escaping; `", "` / `": "` separators; `indent=` and `sort_keys=` accepted);
//! - `{% break %}` / `{% continue %}` (HF enables `loopcontrols`);
//! - Python string/dict methods (`.strip()`, `.startswith()`, `.split()`, `.items()`, ...)
//!   via minijinja-contrib's `pycompat`;
//! - HF's `{% generation %}` … `{% endgeneration %}` (assistant-mask tracking) renders its
//!   body unchanged.

use std::fmt::Write as _;

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, Value};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, `tool`, ...
    pub role: String,
    /// The message text.
    pub content: String,
}

impl ChatMessage {
    /// A message with `role` and `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Render `template` for `messages`, as HuggingFace `apply_chat_template(..., tokenize=False)`
/// does. `add_generation_prompt` appends the assistant-turn header. Template syntax errors and
/// `raise_exception` calls return [`Error::InvalidArgument`].
pub fn apply_chat_template(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
) -> Result<String> {
    let source = rewrite_generation_tags(template);
    let env = environment();
    let tmpl = env
        .template_from_str(&source)
        .map_err(|e| Error::InvalidArgument(format!("chat template: {}", describe(&e))))?;
    let ctx = minijinja::context! {
        messages => messages,
        add_generation_prompt => add_generation_prompt,
        bos_token => bos_token,
        eos_token => eos_token,
        tools => Value::from(()),
        documents => Value::from(()),
    };
    tmpl.render(ctx)
        .map_err(|e| Error::InvalidArgument(format!("chat template: {}", describe(&e))))
}

/// A minijinja error with its detail and source chain.
fn describe(e: &minijinja::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        let _ = write!(s, ": {inner}");
        src = inner.source();
    }
    s
}

/// The HF-compatible environment.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_filter("tojson", tojson);
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", strftime_now);
    env
}

/// `{% generation %}` / `{% endgeneration %}` → `{% if true %}` / `{% endif %}`, keeping the
/// tags' whitespace-control markers.
fn rewrite_generation_tags(template: &str) -> std::borrow::Cow<'_, str> {
    if !template.contains("generation") {
        return template.into();
    }
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(open) = rest.find("{%") {
        let Some(close_rel) = rest[open + 2..].find("%}") else {
            break;
        };
        let close = open + 2 + close_rel;
        let inner = &rest[open + 2..close];
        let (lead, body, trail) = split_markers(inner);
        out.push_str(&rest[..open]);
        out.push_str("{%");
        match body {
            "generation" => {
                out.push_str(lead);
                out.push_str(" if true ");
                out.push_str(trail);
            }
            "endgeneration" => {
                out.push_str(lead);
                out.push_str(" endif ");
                out.push_str(trail);
            }
            _ => out.push_str(inner),
        }
        out.push_str("%}");
        rest = &rest[close + 2..];
    }
    out.push_str(rest);
    out.into()
}

/// Split the inside of `{% … %}` into (leading `-`/`+`, trimmed body, trailing `-`/`+`).
fn split_markers(inner: &str) -> (&str, &str, &str) {
    let lead = if inner.starts_with(['-', '+']) {
        &inner[..1]
    } else {
        ""
    };
    let trail = if inner.len() > lead.len() && inner.ends_with(['-', '+']) {
        &inner[inner.len() - 1..]
    } else {
        ""
    };
    let body = inner[lead.len()..inner.len() - trail.len()].trim();
    (lead, body, trail)
}

fn raise_exception(msg: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(
        minijinja::ErrorKind::InvalidOperation,
        msg,
    ))
}

fn tojson(value: Value, kwargs: Kwargs) -> std::result::Result<Value, minijinja::Error> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let _ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let separators: Option<Value> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match v.as_i64() {
            Some(n) if (0..=64).contains(&n) => Some(" ".repeat(n as usize)),
            Some(_) => None,
            None => Some(v.as_str().unwrap_or("").to_string()),
        },
    };
    let (item_sep, key_sep) = match separators.as_ref().filter(|s| !s.is_none()) {
        Some(s) => {
            let a = s.get_item_by_index(0)?;
            let b = s.get_item_by_index(1)?;
            (
                a.as_str().unwrap_or(",").to_string(),
                b.as_str().unwrap_or(":").to_string(),
            )
        }
        None if indent.is_some() => (",".to_string(), ": ".to_string()),
        None => (", ".to_string(), ": ".to_string()),
    };
    let fmt = JsonFmt {
        indent,
        item_sep,
        key_sep,
        sort_keys: sort_keys.unwrap_or(false),
    };
    let mut out = String::new();
    fmt.write(&mut out, &value, 0)?;
    Ok(Value::from(out))
}

/// Python `json.dumps` layout.
struct JsonFmt {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

impl JsonFmt {
    fn newline(&self, out: &mut String, depth: usize) {
        if let Some(ind) = &self.indent {
            out.push('\n');
            for _ in 0..depth {
                out.push_str(ind);
            }
        }
    }

    fn write(
        &self,
        out: &mut String,
        v: &Value,
        depth: usize,
    ) -> std::result::Result<(), minijinja::Error> {
        if depth > 128 {
            return Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                "tojson: value nested too deeply",
            ));
        }
        // Python's json.dumps uses "," + newline between items when indenting.
        let sep = |out: &mut String| {
            if self.indent.is_some() {
                out.push_str(self.item_sep.trim_end());
            } else {
                out.push_str(&self.item_sep);
            }
        };
        match v.kind() {
            ValueKind::Undefined | ValueKind::None => out.push_str("null"),
            ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
            ValueKind::Number => {
                if v.is_integer() {
                    let _ = write!(out, "{v}");
                } else {
                    let f = f64::try_from(v.clone()).unwrap_or(f64::NAN);
                    push_py_float(out, f);
                }
            }
            ValueKind::String | ValueKind::Bytes => push_json_str(out, v.as_str().unwrap_or("")),
            ValueKind::Seq | ValueKind::Iterable | ValueKind::Plain | ValueKind::Invalid => {
                if matches!(v.kind(), ValueKind::Plain | ValueKind::Invalid) {
                    push_json_str(out, &v.to_string());
                    return Ok(());
                }
                let items: Vec<Value> = v.try_iter()?.collect();
                if items.is_empty() {
                    out.push_str("[]");
                    return Ok(());
                }
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        sep(out);
                    }
                    self.newline(out, depth + 1);
                    self.write(out, item, depth + 1)?;
                }
                self.newline(out, depth);
                out.push(']');
            }
            ValueKind::Map => {
                let mut keys: Vec<Value> = v.try_iter()?.collect();
                if keys.is_empty() {
                    out.push_str("{}");
                    return Ok(());
                }
                if self.sort_keys {
                    keys.sort();
                }
                out.push('{');
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        sep(out);
                    }
                    self.newline(out, depth + 1);
                    match k.as_str() {
                        Some(s) => push_json_str(out, s),
                        None => push_json_str(out, &k.to_string()),
                    }
                    out.push_str(&self.key_sep);
                    self.write(out, &v.get_item(k)?, depth + 1)?;
                }
                self.newline(out, depth);
                out.push('}');
            }
            _ => push_json_str(out, &v.to_string()),
        }
        Ok(())
    }
}

/// A float as Python's `json.dumps` writes it (`1.0`, `0.1`, `1e+20`, `NaN`, `Infinity`).
fn push_py_float(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("NaN");
    } else if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
    } else if f.fract() == 0.0 && f.abs() < 1e16 {
        let _ = write!(out, "{f:.1}");
    } else if f.abs() >= 1e16 || f.abs() < 1e-4 {
        // Python: 1e+20, 1e-05
        let s = format!("{f:e}");
        match s.split_once('e') {
            Some((m, e)) => {
                let (sign, digits) = match e.strip_prefix('-') {
                    Some(d) => ('-', d),
                    None => ('+', e),
                };
                let _ = write!(out, "{m}e{sign}{digits:0>2}");
            }
            None => out.push_str(&s),
        }
    } else {
        let _ = write!(out, "{f}");
    }
}

/// A JSON string literal with Python's escapes (ensure_ascii=False).
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `strftime_now(fmt)`: the current time (UTC) formatted with the common `strftime` codes
/// (`%Y %y %m %d %e %B %b %A %a %H %I %M %S %p %j %%`); unknown codes are copied as is.
fn strftime_now(fmt: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    strftime(&fmt, secs)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Format Unix time `secs` (UTC) with a `strftime` subset.
fn strftime(fmt: &str, secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (sod / 3600, (sod / 60) % 60, sod % 60);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday (Mon = 0)
    let yday = days - days_from_civil(y, 1, 1) + 1;
    let mut out = String::with_capacity(fmt.len() + 16);
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let _ = match chars.next() {
            Some('Y') => write!(out, "{y}"),
            Some('y') => write!(out, "{:02}", y.rem_euclid(100)),
            Some('m') => write!(out, "{m:02}"),
            Some('d') => write!(out, "{d:02}"),
            Some('e') => write!(out, "{d:>2}"),
            Some('B') => write!(out, "{}", MONTHS[(m - 1) as usize]),
            Some('b') | Some('h') => write!(out, "{}", &MONTHS[(m - 1) as usize][..3]),
            Some('A') => write!(out, "{}", DAYS[weekday]),
            Some('a') => write!(out, "{}", &DAYS[weekday][..3]),
            Some('H') => write!(out, "{hh:02}"),
            Some('I') => write!(out, "{:02}", if hh % 12 == 0 { 12 } else { hh % 12 }),
            Some('M') => write!(out, "{mm:02}"),
            Some('S') => write!(out, "{ss:02}"),
            Some('p') => write!(out, "{}", if hh < 12 { "AM" } else { "PM" }),
            Some('j') => write!(out, "{yday:03}"),
            Some('%') => write!(out, "%"),
            Some(other) => write!(out, "%{other}"),
            None => write!(out, "%"),
        };
    }
    out
}

/// Days since 1970-01-01 → (year, month 1-12, day 1-31) (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// (year, month, day) → days since 1970-01-01.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_known_dates() {
        // 2024-02-29 13:05:09 UTC = 1709211909 (a Thursday, day 60)
        assert_eq!(
            strftime("%Y-%m-%d %H:%M:%S %A %a %B %b %j %I%p %y %%", 1_709_211_909),
            "2024-02-29 13:05:09 Thursday Thu February Feb 060 01PM 24 %"
        );
        assert_eq!(strftime("%d %B %Y", 0), "01 January 1970");
        assert_eq!(strftime("%d %b %Y", 951_782_400), "29 Feb 2000");
    }

    #[test]
    fn generation_tags_rewritten() {
        assert_eq!(
            rewrite_generation_tags("a{%- generation %}b{% endgeneration -%}c"),
            "a{%- if true %}b{% endif -%}c"
        );
        let out = apply_chat_template(
            "{% for m in messages %}{% generation %}{{ m.content }}{% endgeneration %}{% endfor %}",
            &[ChatMessage::new("user", "hi")],
            false,
            "",
            "",
        )
        .unwrap();
        assert_eq!(out, "hi");
    }

    #[test]
    fn python_floats() {
        let f = |x: f64| {
            let mut s = String::new();
            push_py_float(&mut s, x);
            s
        };
        assert_eq!(f(1.0), "1.0");
        assert_eq!(f(0.1), "0.1");
        assert_eq!(f(1e20), "1e+20");
        assert_eq!(f(1e-5), "1e-05");
        assert_eq!(f(-2.5), "-2.5");
    }
}
