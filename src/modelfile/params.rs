//! Modelfile PARAMETER names and value types, as Ollama's `api.Options` declares them and
//! `api.FormatParams` parses them (`strconv.ParseInt(v, 10, 64)`, `ParseFloat(v, 32)`,
//! `ParseBool`).

/// The type Ollama parses a parameter's value as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    Int,
    Float,
    Bool,
    /// A list (`stop`): each PARAMETER line adds one string.
    StringList,
}

/// Parameters Ollama accepts, with their types.
pub const PARAMETERS: &[(&str, ParamType)] = &[
    ("num_ctx", ParamType::Int),
    ("num_batch", ParamType::Int),
    ("num_gpu", ParamType::Int),
    ("main_gpu", ParamType::Int),
    ("num_thread", ParamType::Int),
    ("num_keep", ParamType::Int),
    ("seed", ParamType::Int),
    ("num_predict", ParamType::Int),
    ("top_k", ParamType::Int),
    ("repeat_last_n", ParamType::Int),
    ("top_p", ParamType::Float),
    ("min_p", ParamType::Float),
    ("typical_p", ParamType::Float),
    ("temperature", ParamType::Float),
    ("repeat_penalty", ParamType::Float),
    ("presence_penalty", ParamType::Float),
    ("frequency_penalty", ParamType::Float),
    ("use_mmap", ParamType::Bool),
    ("stop", ParamType::StringList),
];

/// Parameters Ollama still accepts but ignores, printing "parameter X is deprecated".
pub const DEPRECATED: &[&str] = &[
    "penalize_newline",
    "low_vram",
    "f16_kv",
    "logits_all",
    "vocab_only",
    "use_mlock",
    "mirostat",
    "mirostat_tau",
    "mirostat_eta",
];

/// Ollama keeps parameters as commands named after the parameter, so a parameter with one
/// of these (internal, lower-case) command names is read as that command.
const COMMAND_NAMES: &[(&str, &str)] = &[
    ("model", "FROM"),
    ("license", "LICENSE"),
    ("template", "TEMPLATE"),
    ("system", "SYSTEM"),
    ("adapter", "ADAPTER"),
    ("draft", "DRAFT"),
    ("renderer", "RENDERER"),
    ("parser", "PARSER"),
    ("requires", "REQUIRES"),
    ("message", "MESSAGE"),
];

/// The type of a known parameter.
pub fn param_type(name: &str) -> Option<ParamType> {
    PARAMETERS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// The outcome of checking one PARAMETER line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamCheck {
    Ok,
    /// Accepted and ignored by Ollama.
    Deprecated,
    /// Read by Ollama as the named command instead of a parameter.
    Shadowed(&'static str),
    /// `ollama create` fails with this message (Ollama's wording).
    Err(String),
}

/// Checks a parameter name and value as `ollama create` does.
pub fn check(name: &str, value: &str) -> ParamCheck {
    if let Some((_, cmd)) = COMMAND_NAMES.iter().find(|(n, _)| *n == name) {
        return ParamCheck::Shadowed(cmd);
    }
    if DEPRECATED.contains(&name) {
        return ParamCheck::Deprecated;
    }
    let Some(ty) = param_type(name) else {
        return ParamCheck::Err(format!("unknown parameter '{name}'"));
    };
    let ok = match ty {
        ParamType::Int => parse_go_int(value).is_some(),
        ParamType::Float => parse_go_float32(value).is_some(),
        ParamType::Bool => parse_go_bool(value).is_some(),
        ParamType::StringList => true,
    };
    if ok {
        ParamCheck::Ok
    } else {
        let kind = match ty {
            ParamType::Int => "int",
            ParamType::Float => "float",
            _ => "bool",
        };
        ParamCheck::Err(format!("invalid {kind} value [{value}]"))
    }
}

/// `strconv.ParseInt(s, 10, 64)`: optional sign, decimal digits, fits in i64.
pub fn parse_go_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Rust accepts the same syntax (a leading '+' included).
    s.parse::<i64>().ok()
}

/// `strconv.ParseFloat(s, 32)`: Go's decimal or hexadecimal float syntax, "inf",
/// "infinity", "nan" (any case, infinities signed); an error when the value rounds to an
/// infinite float32.
pub fn parse_go_float32(s: &str) -> Option<f32> {
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    let lower = unsigned.to_ascii_lowercase();
    if lower == "inf" || lower == "infinity" {
        return Some(if s.starts_with('-') { f32::NEG_INFINITY } else { f32::INFINITY });
    }
    if s.eq_ignore_ascii_case("nan") {
        return Some(f32::NAN);
    }
    let v: f64 = if let Some(hex) = lower.strip_prefix("0x") {
        let v = parse_hex_float(hex)?;
        if s.starts_with('-') {
            -v
        } else {
            v
        }
    } else {
        // Decimal: digits with optional '.', optional exponent; underscores only with a
        // base prefix, so none here.
        let b = unsigned.as_bytes();
        let mut i = 0;
        let mut mant = 0;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
            mant += 1;
        }
        if i < b.len() && b[i] == b'.' {
            i += 1;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
                mant += 1;
            }
        }
        if mant == 0 {
            return None;
        }
        if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
            i += 1;
            if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
                i += 1;
            }
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i == start {
                return None;
            }
        }
        if i != b.len() {
            return None;
        }
        let v: f64 = unsigned.parse().ok()?;
        if s.starts_with('-') {
            -v
        } else {
            v
        }
    };
    let f = v as f32;
    if f.is_infinite() {
        None
    } else {
        Some(f)
    }
}

/// Hexadecimal mantissa `h[.h]p[+-]d` (the exponent is required, as in Go).
fn parse_hex_float(s: &str) -> Option<f64> {
    let (mant, exp) = s.split_once('p')?;
    let exp: i32 = exp.parse().ok()?;
    let (int, frac) = mant.split_once('.').unwrap_or((mant, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let mut v = 0f64;
    for c in int.chars() {
        v = v * 16.0 + c.to_digit(16)? as f64;
    }
    let mut scale = 1.0 / 16.0;
    for c in frac.chars() {
        v += c.to_digit(16)? as f64 * scale;
        scale /= 16.0;
    }
    Some(v * 2f64.powi(exp))
}

/// `strconv.ParseBool`.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_number_syntax() {
        assert_eq!(parse_go_int("+42"), Some(42));
        assert_eq!(parse_go_int("-1"), Some(-1));
        for bad in ["", "+", "1.0", "0x10", "1_000", " 1", "9223372036854775808"] {
            assert_eq!(parse_go_int(bad), None, "{bad}");
        }
        for (s, v) in
            [("1", 1.0), ("1.", 1.0), (".5", 0.5), ("-2.5e-1", -0.25), ("0x1p-2", 0.25), ("3.4028235e38", f32::MAX)]
        {
            assert_eq!(parse_go_float32(s), Some(v), "{s}");
        }
        assert!(parse_go_float32("Inf").unwrap().is_infinite());
        assert!(parse_go_float32("NaN").unwrap().is_nan());
        for bad in ["", ".", "e5", "1e", "1e39", "0x1", "1,5", "1.5f"] {
            assert_eq!(parse_go_float32(bad), None, "{bad}");
        }
        assert_eq!(parse_go_bool("True"), Some(true));
        assert_eq!(parse_go_bool("yes"), None);
    }
}
