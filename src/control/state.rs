//! The state file: the disables in force, so that a restart or a binary
//! upgrade (`serve --upgrade`) keeps a provider an operator took out.
//!
//! It sits next to the pid file, named after it (`steadfast.pid` →
//! `steadfast.state.json`): the directory is the process's own writable
//! runtime directory (an emptyDir in Kubernetes, which outlives container
//! restarts), and two instances with their own pid files never share one.
//! Times are wall-clock RFC 3339, since monotonic instants mean nothing to
//! another process. Written whole to a temporary file and renamed over the
//! old one, so a reader sees the old state or the new, never half of one.
//!
//! ```json
//! {"version":1,"disabled":[{"provider":"p1","since":"2026-01-02T03:04:05.000Z","until":null}]}
//! ```

use crate::health::Disabled;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

const VERSION: u32 = 1;

/// One disabled provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub provider: String,
    /// When it was disabled (RFC 3339; for people reading the file).
    pub since: String,
    /// When the disable ends (RFC 3339); `null`: when enabled.
    pub until: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    disabled: Vec<Entry>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not a steadfast state file: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("unsupported version {0} (this steadfast writes {VERSION})")]
    Version(u32),
    #[error("provider {provider}: {field} {value:?} is not an RFC 3339 time")]
    Time {
        provider: String,
        field: &'static str,
        value: String,
    },
}

/// The state file of a process whose pid file is `pid_file`.
pub fn path_for(pid_file: &Path) -> Option<PathBuf> {
    let stem = pid_file.file_stem()?.to_str()?;
    Some(pid_file.with_file_name(format!("{stem}.state.json")))
}

impl Entry {
    /// The entry for a disable in force at `now`.
    pub fn at(provider: &str, d: Disabled) -> Entry {
        let wall = |t: Instant| crate::clock::rfc3339(crate::clock::wall(t));
        Entry {
            provider: provider.to_string(),
            since: wall(d.since),
            until: d.until.map(wall),
        }
    }

    /// The end of the disable as an instant of this process: `None` when it
    /// has already ended (the entry is dropped), `Some(None)` for "until
    /// enabled". Assumes a validated entry (see [`read`]).
    pub fn until_instant(&self, now: Instant, wall_now: SystemTime) -> Option<Option<Instant>> {
        let Some(until) = &self.until else {
            return Some(None);
        };
        let end = crate::clock::parse_rfc3339(until)?;
        let left = end.duration_since(wall_now).ok().filter(|d| !d.is_zero())?;
        Some(now.checked_add(left))
    }
}

/// Parse the file's text.
pub fn parse(text: &str) -> Result<Vec<Entry>, StateError> {
    let f: File = serde_json::from_str(text)?;
    if f.version != VERSION {
        return Err(StateError::Version(f.version));
    }
    for e in &f.disabled {
        let fields = [("since", Some(&e.since)), ("until", e.until.as_ref())];
        for (field, value) in fields {
            if let Some(v) = value {
                if crate::clock::parse_rfc3339(v).is_none() {
                    return Err(StateError::Time {
                        provider: e.provider.clone(),
                        field,
                        value: v.clone(),
                    });
                }
            }
        }
    }
    Ok(f.disabled)
}

/// The entries in `path`; `Ok(None)` when there is no file.
pub fn read(path: &Path) -> Result<Option<Vec<Entry>>, StateError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Replace the file with `entries`: written to a temporary file in the same
/// directory, flushed to disk, then renamed over the old one.
pub fn write(path: &Path, entries: &[Entry]) -> Result<(), StateError> {
    let f = File {
        version: VERSION,
        disabled: entries.to_vec(),
    };
    let mut text = serde_json::to_vec(&f)?;
    text.push(b'\n');
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&text)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(written?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_file_is_named_after_the_pid_file() {
        assert_eq!(
            path_for(Path::new("/run/steadfast/steadfast.pid")),
            Some(PathBuf::from("/run/steadfast/steadfast.state.json"))
        );
        assert_eq!(
            path_for(Path::new("/tmp/b.pid")),
            Some(PathBuf::from("/tmp/b.state.json"))
        );
        assert_eq!(
            path_for(Path::new("pidfile")),
            Some(PathBuf::from("pidfile.state.json"))
        );
        assert_eq!(path_for(Path::new("/")), None);
    }

    #[test]
    fn entries_round_trip_through_the_file_and_elapsed_ones_drop() {
        let dir = std::env::temp_dir().join(format!("steadfast-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.state.json");
        assert!(read(&path).unwrap().is_none(), "no file: nothing");
        let now = Instant::now();
        let forever = Disabled {
            since: now,
            until: None,
        };
        let hour = Disabled {
            since: now,
            until: Some(now + Duration::from_secs(3600)),
        };
        write(&path, &[Entry::at("a", forever), Entry::at("b", hour)]).unwrap();
        let back = read(&path).unwrap().unwrap();
        assert_eq!(back.len(), 2);
        let wall = SystemTime::now();
        assert_eq!(back[0].until_instant(now, wall), Some(None));
        let b = back[1].until_instant(now, wall).unwrap().unwrap();
        let left = b - now;
        assert!(
            left > Duration::from_secs(3598) && left <= Duration::from_secs(3600),
            "{left:?}"
        );
        // An hour later, b's disable is over.
        assert_eq!(
            back[1].until_instant(now, wall + Duration::from_secs(3601)),
            None
        );
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["s.state.json"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn corrupt_files_are_errors_not_guesses() {
        for bad in [
            "",
            "{",
            "[]",
            r#"{"version":2,"disabled":[]}"#,
            r#"{"version":1}"#,
            r#"{"version":1,"disabled":[{"provider":"a","since":"x","until":null}]}"#,
            r#"{"version":1,"disabled":[{"provider":"a","since":"2026-01-01T00:00:00Z","until":"soon"}]}"#,
            r#"{"version":1,"disabled":[{"provider":"a","since":"2026-01-01T00:00:00Z","until":null,"x":1}]}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let ok = r#"{"version":1,"disabled":[{"provider":"a","since":"2026-01-01T00:00:00Z","until":null}]}"#;
        assert_eq!(parse(ok).unwrap().len(), 1);
    }
}
