//! Log capture shared by the in-process shell tests: every log line of the test process at
//! `info` and above, which the tests wait on when the outcome of a reload is "nothing changed".

/// The captured lines (a test process runs for seconds; its log stays small).
static LOG: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

/// Appends to [`LOG`].
struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Routes this process's logs into [`LOG`] (once).
pub fn capture_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("mokv_shell=info"))
        .with_ansi(false)
        .with_writer(|| LogWriter)
        .try_init();
}

/// Log lines containing every one of `needles`.
pub fn logged(needles: &[&str]) -> usize {
    let log = LOG.lock().unwrap();
    String::from_utf8_lossy(&log).lines().filter(|l| needles.iter().all(|n| l.contains(n))).count()
}
