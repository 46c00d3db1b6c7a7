//! The `logging` section: log format, which requests get an access log
//! line, and what counts as slow.

use super::{ms, Errors};
use crate::config::schema::Logging;
use crate::config::{AccessLog, LogFormat, LogSettings};

pub(super) fn logging(errs: &mut Errors, l: &Logging) -> Option<LogSettings> {
    let before = errs.0.len();
    let format = match l.format.as_str() {
        "json" => LogFormat::Json,
        "text" => LogFormat::Text,
        other => {
            errs.push(
                "logging.format",
                format!("unknown format {other:?}; expected json or text"),
            );
            LogFormat::Json
        }
    };
    let access_log = match l.access_log.as_str() {
        "all" => AccessLog::All,
        "errors_and_slow" => AccessLog::ErrorsAndSlow,
        "off" => AccessLog::Off,
        other => {
            errs.push(
                "logging.access_log",
                format!("unknown mode {other:?}; expected all, errors_and_slow or off"),
            );
            AccessLog::ErrorsAndSlow
        }
    };
    if errs.0.len() != before {
        return None;
    }
    Some(LogSettings {
        format,
        access_log,
        slow: ms(l.slow_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_access_log_modes() {
        let mut errs = Errors(Vec::new());
        let l = logging(&mut errs, &Logging::default()).unwrap();
        assert_eq!(
            (l.format, l.access_log, l.slow),
            (LogFormat::Json, AccessLog::ErrorsAndSlow, ms(1000))
        );
        let text = Logging {
            format: "text".into(),
            access_log: "off".into(),
            slow_ms: 5,
        };
        let l = logging(&mut errs, &text).unwrap();
        assert_eq!(
            (l.format, l.access_log, l.slow),
            (LogFormat::Text, AccessLog::Off, ms(5))
        );
        assert!(errs.0.is_empty());
        let bad = Logging {
            format: "JSON".into(),
            access_log: "some".into(),
            ..Logging::default()
        };
        assert_eq!(logging(&mut errs, &bad), None);
        assert_eq!(errs.paths(), ["logging.format", "logging.access_log"]);
        assert_eq!(
            errs.0[1].reason,
            "unknown mode \"some\"; expected all, errors_and_slow or off"
        );
    }
}
