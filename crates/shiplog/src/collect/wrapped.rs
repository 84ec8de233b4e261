//! Running a wrapped command (`shiplog migrate -- CMD…`, `shiplog build -- CMD…`): no
//! shell, stdout and stderr passed through unchanged as they come, a bounded tail of each
//! kept, every line handed to the caller, SIGINT and SIGTERM sent to shiplog forwarded to
//! the command, and the exit code as a shell gives it (128+N when killed by signal N, 127
//! not found, 126 not executable).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

/// Output kept for error texts: at most this many bytes and lines.
const TAIL_BYTES: usize = 64 * 1024;
const TAIL_LINES: usize = 50;
/// Longest `error` reported, and its lines.
pub const ERROR_BYTES: usize = 2048;
const ERROR_LINES: usize = 20;
/// Longest `output_tail` reported with a failure.
pub const OUTPUT_TAIL_BYTES: usize = 8192;

/// One line of the command's output, as it came.
pub struct Line<'a> {
    pub text: &'a str,
    pub at: Instant,
    pub wall: SystemTime,
}

/// What running the command gave.
#[derive(Debug, Default)]
pub struct Run {
    pub exit_code: u8,
    /// Killed by this signal.
    pub signal: Option<i32>,
    /// Could not start.
    pub spawn_error: Option<String>,
    pub started: Option<SystemTime>,
    pub duration: Duration,
    /// The last lines of stderr, and of stdout.
    pub stderr_tail: Tail,
    pub stdout_tail: Tail,
    pub ended: Option<Instant>,
}

/// The last lines of a stream, bounded in lines and bytes.
#[derive(Debug, Default)]
pub struct Tail {
    lines: VecDeque<String>,
    bytes: usize,
}

impl Tail {
    fn push(&mut self, line: String) {
        self.bytes += line.len();
        self.lines.push_back(line);
        while self.lines.len() > TAIL_LINES || self.bytes > TAIL_BYTES {
            let Some(l) = self.lines.pop_front() else {
                break;
            };
            self.bytes -= l.len();
        }
    }

    fn is_empty(&self) -> bool {
        self.lines.iter().all(|l| l.trim().is_empty())
    }

    /// The tail as text, cut from the front to at most `max` bytes at a line boundary.
    pub fn text(&self, max: usize) -> String {
        let mut out: VecDeque<&str> = VecDeque::new();
        let mut n = 0;
        for l in self.lines.iter().rev() {
            if n + l.len() + 1 > max && !out.is_empty() {
                break;
            }
            n += l.len() + 1;
            out.push_front(l);
        }
        let mut s = out.into_iter().collect::<Vec<_>>().join("\n");
        if s.len() > max {
            let mut cut = s.len() - max;
            while !s.is_char_boundary(cut) {
                cut += 1;
            }
            s = s[cut..].to_string();
        }
        s.trim().to_string()
    }
}

static PENDING_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Sent by a process (kill, a CI runner): forward it. Sent by the kernel (a terminal's
    // Ctrl-C reaches the whole process group, the child included): the child has it.
    // SAFETY: the kernel passes a valid siginfo_t with SA_SIGINFO.
    let from_process = info.is_null() || unsafe { (*info).si_code } <= 0;
    if from_process {
        PENDING_SIGNAL.store(sig, Ordering::SeqCst);
    }
}

fn install_forwarding() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a plain sigaction with a handler that only stores to an atomic.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

enum Msg {
    Line(bool, String, Instant, SystemTime),
}

/// Copies a pipe to our own stream unchanged, and sends its lines (lossy UTF-8).
fn pump(mut from: impl Read, is_err: bool, tx: mpsc::Sender<Msg>) {
    let mut buf = [0u8; 8192];
    let mut line: Vec<u8> = Vec::new();
    let send_line = |line: &mut Vec<u8>| {
        let mut s = String::from_utf8_lossy(line).into_owned();
        if s.ends_with('\r') {
            s.pop();
        }
        let _ = tx.send(Msg::Line(is_err, s, Instant::now(), SystemTime::now()));
        line.clear();
    };
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let chunk = &buf[..n];
        // Pass-through first, unchanged.
        if is_err {
            let mut e = std::io::stderr().lock();
            let _ = e.write_all(chunk);
            let _ = e.flush();
        } else {
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(chunk);
            let _ = o.flush();
        }
        for &b in chunk {
            if b == b'\n' {
                send_line(&mut line);
            } else if line.len() < TAIL_BYTES {
                line.push(b);
            }
        }
    }
    if !line.is_empty() {
        send_line(&mut line);
    }
}

/// Runs the command with pass-through; `on_line` sees every output line.
pub fn execute(command: &[OsString], mut on_line: impl FnMut(Line<'_>)) -> Run {
    let mut run = Run {
        started: Some(SystemTime::now()),
        ..Default::default()
    };
    let start = Instant::now();
    install_forwarding();
    let mut child = match Command::new(&command[0])
        .args(&command[1..])
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            let prog = command[0].to_string_lossy();
            eprintln!("shiplog: cannot run {prog}: {e}");
            run.exit_code = match e.kind() {
                std::io::ErrorKind::NotFound => 127,
                _ => 126,
            };
            run.spawn_error = Some(format!("cannot run {prog}: {e}"));
            run.ended = Some(Instant::now());
            run.duration = start.elapsed();
            return run;
        }
    };
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().expect("piped");
    let err = child.stderr.take().expect("piped");
    let tx2 = tx.clone();
    let t_out = std::thread::spawn(move || pump(out, false, tx));
    let t_err = std::thread::spawn(move || pump(err, true, tx2));

    let mut handle = |run: &mut Run, msg: Msg| {
        let Msg::Line(is_err, line, at, wall) = msg;
        on_line(Line {
            text: &line,
            at,
            wall,
        });
        if is_err {
            run.stderr_tail.push(line);
        } else {
            run.stdout_tail.push(line);
        }
    };
    let status = loop {
        match rx.recv_timeout(Duration::from_millis(25)) {
            Ok(msg) => handle(&mut run, msg),
            Err(mpsc::RecvTimeoutError::Timeout) | Err(mpsc::RecvTimeoutError::Disconnected) => {}
        }
        let sig = PENDING_SIGNAL.swap(0, Ordering::SeqCst);
        if sig != 0 {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(child.id() as libc::pid_t, sig);
            }
        }
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(_) => break None,
        }
    };
    run.ended = Some(Instant::now());
    // The rest of the output. A grandchild may keep the pipes open: wait a little only.
    let drain_until = Instant::now() + Duration::from_secs(2);
    while let Ok(msg) = rx.recv_timeout(drain_until.saturating_duration_since(Instant::now())) {
        handle(&mut run, msg);
    }
    if t_out.is_finished() {
        let _ = t_out.join();
    }
    if t_err.is_finished() {
        let _ = t_err.join();
    }
    run.duration = start.elapsed();
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(s) => {
            if let Some(c) = s.code() {
                run.exit_code = (c & 0xff) as u8;
            } else if let Some(sig) = s.signal() {
                run.signal = Some(sig);
                run.exit_code = (128 + sig).min(255) as u8;
            }
        }
        None => run.exit_code = 1,
    }
    run
}

/// The error text of a failed run: the exception of a Python traceback (Alembic) when the
/// output ends with one, else the last lines.
pub fn error_text(tail: &Tail) -> String {
    let lines: Vec<&String> = tail.lines.iter().collect();
    // A traceback's frames (`  File "…", line N`) are indented (its header may have left
    // the tail); the exception follows the last indented line.
    if let Some(tb) = lines.iter().position(|l| {
        l.starts_with("Traceback (most recent call last)") || l.starts_with("  File \"")
    }) {
        let after = &lines[tb..];
        if let Some(last_frame) = after.iter().rposition(|l| l.starts_with(' ')) {
            let exc: Vec<&str> = after[last_frame + 1..].iter().map(|l| l.as_str()).collect();
            let text = exc.join("\n");
            if !text.trim().is_empty() {
                let mut t = Tail::default();
                exc.iter().for_each(|l| t.push(l.to_string()));
                return t.text(ERROR_BYTES);
            }
        }
    }
    let mut t = Tail::default();
    for l in lines.iter().skip(lines.len().saturating_sub(ERROR_LINES)) {
        t.push(l.to_string());
    }
    t.text(ERROR_BYTES)
}

impl Run {
    /// The command failed: a non-zero exit, a signal, or it could not start.
    pub fn failed(&self) -> bool {
        self.exit_code != 0 || self.signal.is_some() || self.spawn_error.is_some()
    }

    /// What went wrong, for an event's `error`: the start failure, the signal, else the
    /// error text of the output's tail (stderr when it has any), else the exit code.
    pub fn error(&self) -> Option<String> {
        if let Some(e) = &self.spawn_error {
            return Some(e.clone());
        }
        if let Some(sig) = self.signal {
            return Some(format!("killed by signal {sig}"));
        }
        if !self.failed() {
            return None;
        }
        let tail = error_text(self.error_stream());
        Some(if tail.is_empty() {
            format!("exited with code {}", self.exit_code)
        } else {
            tail
        })
    }

    /// The last lines of output (stderr when it has any), for `output_tail`.
    pub fn output_tail(&self) -> String {
        self.error_stream().text(OUTPUT_TAIL_BYTES)
    }

    fn error_stream(&self) -> &Tail {
        if self.stderr_tail.is_empty() {
            &self.stdout_tail
        } else {
            &self.stderr_tail
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_of_a_traceback() {
        let mut t = Tail::default();
        for l in [
            "INFO  [alembic.runtime.migration] Running upgrade a -> b, x",
            "Traceback (most recent call last):",
            "  File \"x.py\", line 1, in <module>",
            "    foo()",
            "sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) no such table: t",
            "[SQL: ALTER TABLE t ADD COLUMN c TEXT]",
        ] {
            t.push(l.to_string());
        }
        assert_eq!(
            error_text(&t),
            "sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) no such table: t\n[SQL: ALTER TABLE t ADD COLUMN c TEXT]"
        );
        let mut t = Tail::default();
        t.push("ERROR: relation \"users\" already exists".into());
        assert_eq!(error_text(&t), "ERROR: relation \"users\" already exists");
    }

    #[test]
    fn tail_is_bounded() {
        let mut t = Tail::default();
        for i in 0..200 {
            t.push(format!("line {i}"));
        }
        assert_eq!(t.lines.len(), TAIL_LINES);
        assert!(t.text(20).ends_with("line 199"));
        assert!(t.text(20).len() <= 20);
    }
}
