//! The pid file. Pingora writes it only when daemonized; scripts (and the
//! systemd unit's upgrade) need it in the foreground too, and an upgraded
//! process must not have its pid file deleted by the old one on exit.

use std::path::Path;

pub fn write(path: &str) -> std::io::Result<()> {
    let tmp = format!("{path}.tmp.{}", std::process::id());
    std::fs::write(&tmp, format!("{}\n", std::process::id()))?;
    // Atomic replace: a reader never sees a half-written pid.
    std::fs::rename(&tmp, path)
}

pub fn read(path: &str) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Remove the pid file only while it still names this process.
pub fn remove_if_ours(path: &str) {
    if read(path) == Some(std::process::id()) && Path::new(path).exists() {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_pid_is_ours_and_only_ours_is_removed() {
        let dir = std::env::temp_dir().join(format!("steadfast-pid-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.pid");
        let path = p.to_str().unwrap();
        write(path).unwrap();
        assert_eq!(read(path), Some(std::process::id()));
        std::fs::write(path, "1\n").unwrap();
        remove_if_ours(path);
        assert!(p.exists(), "another process's pid file was removed");
        write(path).unwrap();
        remove_if_ours(path);
        assert!(!p.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
