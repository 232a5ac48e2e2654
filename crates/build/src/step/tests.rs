//! Step tests with real shells, real bwrap and real process trees. Orphan
//! checks scan /proc for a `sleep` with a per-test unique duration argument.

use super::*;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::detect::{BuildSettings, ServePlan, detect};

type Lines = Arc<Mutex<Vec<(LogStream, String, Duration)>>>;

struct Run {
    result: Result<StepOutcome, StepError>,
    lines: Vec<(LogStream, String, Duration)>,
    elapsed: Duration,
}

impl Run {
    fn text(&self) -> Vec<(LogStream, &str)> {
        self.lines.iter().map(|(s, l, _)| (*s, l.as_str())).collect()
    }

    fn stdout(&self) -> Vec<&str> {
        self.lines
            .iter()
            .filter(|(s, _, _)| *s == LogStream::Stdout)
            .map(|(_, l, _)| l.as_str())
            .collect()
    }
}

fn step(name: &str, command: &str) -> BuildStep {
    BuildStep {
        name: name.into(),
        command: command.into(),
    }
}

async fn run_in(
    sandbox: &Sandbox,
    app: &Path,
    command: &str,
    timeout: Duration,
    cancel: CancellationToken,
    env: &[(String, String)],
) -> Run {
    let lines: Lines = Arc::default();
    let sink = lines.clone();
    let started = Instant::now();
    let cancel_in_cb = cancel.clone();
    let mut on_line = move |stream: LogStream, line: String| {
        // A line "CANCEL-ME" lets tests cancel at a precise moment.
        if line == "CANCEL-ME" {
            cancel_in_cb.cancel();
        }
        sink.lock().unwrap().push((stream, line, started.elapsed()));
    };
    let result = run_step(
        sandbox,
        app,
        &step("build", command),
        env,
        timeout,
        cancel,
        &mut on_line,
    )
    .await;
    let elapsed = started.elapsed();
    let lines = lines.lock().unwrap().clone();
    Run { result, lines, elapsed }
}

async fn run(sandbox: &Sandbox, app: &Path, command: &str) -> Run {
    run_in(
        sandbox,
        app,
        command,
        Duration::from_secs(30),
        CancellationToken::new(),
        &[],
    )
    .await
}

fn bwrap() -> Sandbox {
    let s = Sandbox::detect();
    assert!(
        s.is_sandboxed(),
        "bubblewrap must be installed and working to run these tests"
    );
    s
}

fn both() -> [(&'static str, Sandbox); 2] {
    [("bwrap", bwrap()), ("direct", Sandbox::unsandboxed())]
}

/// A `sleep` argument no other process on the machine uses.
fn unique_sleep_arg() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{}.{:03}{:06}", 1000 + n, std::process::id() % 1000, nanos % 1_000_000)
}

/// Pids of live (non-zombie) processes whose argv contains `arg`.
fn processes_with_arg(arg: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline.split(|&b| b == 0).any(|a| a == arg.as_bytes()) {
            found.push(pid);
        }
    }
    found
}

/// Asserts the marked process is gone (allowing a moment for the kernel to
/// finish delivering SIGKILL).
async fn assert_no_process_with(arg: &str, context: &str) {
    for _ in 0..50 {
        if processes_with_arg(arg).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = processes_with_arg(arg);
    for pid in &left {
        let _ = nix::sys::signal::kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
    }
    panic!("{context}: orphaned processes left behind: {left:?}");
}

fn app_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

// ----- output ---------------------------------------------------------------

#[tokio::test]
async fn delivers_both_streams_line_by_line() {
    let app = app_dir();
    for (mode, sandbox) in both() {
        let r = run(
            &sandbox,
            app.path(),
            "echo out1; echo err1 >&2; printf 'crlf\\r\\n'; echo err2 >&2; printf 'no newline'",
        )
        .await;
        let outcome = r.result.as_ref().unwrap();
        assert_eq!(outcome.exit_code, Some(0));
        let mut out: Vec<_> = r.text();
        // Interleaving between the two pipes is up to the scheduler; order
        // within each stream is not.
        out.sort_by_key(|(s, _)| *s == LogStream::Stderr);
        assert_eq!(
            out,
            vec![
                (LogStream::Stdout, "out1"),
                (LogStream::Stdout, "crlf"),
                (LogStream::Stdout, "no newline"),
                (LogStream::Stderr, "err1"),
                (LogStream::Stderr, "err2"),
            ],
            "{mode}"
        );
    }
}

#[tokio::test]
async fn lines_arrive_while_the_step_is_still_running() {
    let app = app_dir();
    let r = run(&bwrap(), app.path(), "echo first; sleep 1.5; echo second").await;
    r.result.as_ref().unwrap();
    let at = |want: &str| r.lines.iter().find(|(_, l, _)| l == want).unwrap().2;
    // The first line arrived well before the second was even printed: streamed, not
    // collected at the end (relative, so a slow machine does not matter).
    assert!(
        at("second") >= at("first") + Duration::from_millis(1000),
        "{:?} {:?}",
        at("first"),
        at("second")
    );
}

#[tokio::test]
async fn invalid_utf8_is_replaced_and_long_lines_are_truncated() {
    let app = app_dir();
    let r = run(
        &Sandbox::unsandboxed(),
        app.path(),
        "printf 'caf\\351 ok\\n'; head -c 20000 /dev/zero | tr '\\0' a; echo; echo next",
    )
    .await;
    r.result.as_ref().unwrap();
    let out = r.stdout();
    assert_eq!(out[0], "caf\u{FFFD} ok");
    let expected_long = format!(
        "{} … [line truncated: {} more bytes]",
        "a".repeat(MAX_LINE_BYTES),
        20000 - MAX_LINE_BYTES
    );
    assert_eq!(out[1], expected_long);
    assert_eq!(out[2], "next");
    assert_eq!(out.len(), 3);
}

// ----- failures -------------------------------------------------------------

#[tokio::test]
async fn non_zero_exit_is_a_failure_with_a_human_message() {
    let app = app_dir();
    for (mode, sandbox) in both() {
        let lines: Lines = Arc::default();
        let sink = lines.clone();
        let mut on_line = move |s: LogStream, l: String| {
            sink.lock().unwrap().push((s, l, Duration::ZERO));
        };
        let err = run_step(
            &sandbox,
            app.path(),
            &step("install", "echo 'npm ERR! missing' >&2; exit 3"),
            &[],
            Duration::from_secs(10),
            CancellationToken::new(),
            &mut on_line,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&err, StepError::Failed { name, code: Some(3) } if name == "install"),
            "{mode}: {err:?}"
        );
        assert_eq!(err.to_string(), "install step exited with code 3");
        assert_eq!(lines.lock().unwrap()[0].1, "npm ERR! missing");
    }
}

#[tokio::test]
async fn missing_app_dir_is_a_spawn_error() {
    let err = run_step(
        &Sandbox::unsandboxed(),
        Path::new("/nonexistent/berth/app"),
        &step("build", "true"),
        &[],
        Duration::from_secs(5),
        CancellationToken::new(),
        &mut |_, _| {},
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StepError::Spawn { .. }), "{err:?}");
    assert!(err.to_string().starts_with("could not start the build step: "));
}

#[test]
fn messages_read_well() {
    let timed_out = StepError::TimedOut {
        name: "build".into(),
        after: Duration::from_secs(10),
    };
    assert_eq!(timed_out.to_string(), "build step timed out after 10 s");
    let killed = StepError::Failed {
        name: "build".into(),
        code: None,
    };
    assert_eq!(killed.to_string(), "build step was killed by a signal");
    assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5 s");
    assert_eq!(fmt_duration(Duration::from_millis(250)), "250 ms");
}

// ----- timeouts, cancellation and orphans -------------------------------------

#[tokio::test]
async fn timeout_kills_the_whole_tree() {
    let app = app_dir();
    for (mode, sandbox) in both() {
        let marker = unique_sleep_arg();
        let r = run_in(
            &sandbox,
            app.path(),
            &format!("sleep {marker} & echo started; wait"),
            Duration::from_secs(1),
            CancellationToken::new(),
            &[],
        )
        .await;
        let err = r.result.as_ref().unwrap_err();
        assert!(
            matches!(err, StepError::TimedOut { after, .. } if *after == Duration::from_secs(1)),
            "{mode}: {err:?}"
        );
        assert_eq!(err.to_string(), "build step timed out after 1 s");
        assert_eq!(r.stdout(), vec!["started"], "{mode}");
        // Far below the step's own `sleep`: it was killed, not waited for.
        assert!(r.elapsed < Duration::from_secs(30), "{mode}: {:?}", r.elapsed);
        assert_no_process_with(&marker, mode).await;
    }
}

#[tokio::test]
async fn timeout_escalates_to_sigkill_when_sigterm_is_ignored() {
    let app = app_dir();
    for (mode, sandbox) in both() {
        let marker = unique_sleep_arg();
        // Ignored signals are inherited, so the sleep ignores TERM as well.
        let r = run_in(
            &sandbox,
            app.path(),
            &format!("trap '' TERM; sleep {marker} & echo started; wait; wait"),
            Duration::from_millis(500),
            CancellationToken::new(),
            &[],
        )
        .await;
        assert!(matches!(r.result, Err(StepError::TimedOut { .. })), "{mode}");
        assert_no_process_with(&marker, mode).await;
    }
}

#[tokio::test]
async fn cancellation_kills_the_whole_tree() {
    let app = app_dir();
    for (mode, sandbox) in both() {
        let marker = unique_sleep_arg();
        let r = run_in(
            &sandbox,
            app.path(),
            &format!("sleep {marker} & echo CANCEL-ME; wait"),
            Duration::from_secs(60),
            CancellationToken::new(),
            &[],
        )
        .await;
        let err = r.result.as_ref().unwrap_err();
        assert!(matches!(err, StepError::Cancelled { .. }), "{mode}: {err:?}");
        assert_eq!(err.to_string(), "build step was cancelled");
        assert!(r.elapsed < Duration::from_secs(30), "{mode}: {:?}", r.elapsed);
        assert_no_process_with(&marker, mode).await;
    }
}

#[tokio::test]
async fn cancellation_sends_sigterm_to_the_sandboxed_process_first() {
    // Under bwrap, signalling the outer bwrap would SIGKILL the sandbox at
    // once; the app itself must see SIGTERM and get to clean up.
    let app = app_dir();
    for (mode, sandbox) in both() {
        let marker = unique_sleep_arg();
        let r = run_in(
            &sandbox,
            app.path(),
            &format!("trap 'echo got TERM; exit 0' TERM; sleep {marker} & echo CANCEL-ME; wait"),
            Duration::from_secs(60),
            CancellationToken::new(),
            &[],
        )
        .await;
        assert!(matches!(r.result, Err(StepError::Cancelled { .. })), "{mode}");
        // Graceful: the trap ran, which a SIGKILL would not have allowed. (No wall-clock
        // bound: on a loaded machine the sandbox may take seconds to start.)
        assert_eq!(r.stdout(), vec!["CANCEL-ME", "got TERM"], "{mode}");
        assert_no_process_with(&marker, mode).await;
    }
}

#[tokio::test]
async fn a_foreground_command_gets_time_for_a_graceful_shutdown() {
    // The app (node) is a child of the wrapping sh. If sh died on SIGTERM,
    // bwrap would tear the sandbox down and SIGKILL node mid-cleanup.
    let app = app_dir();
    for (mode, sandbox) in both() {
        let r = run_in(
            &sandbox,
            app.path(),
            "node -e \"process.on('SIGTERM',()=>setTimeout(()=>{console.log('cleaned up');process.exit(0)},300));\
             setInterval(()=>{},1000);console.log('CANCEL-ME')\"; echo 'must not run after TERM'",
            Duration::from_secs(60),
            CancellationToken::new(),
            &[],
        )
        .await;
        assert!(matches!(r.result, Err(StepError::Cancelled { .. })), "{mode}");
        // "cleaned up" is printed 300 ms after SIGTERM: proof the app was not SIGKILLed.
        assert_eq!(r.stdout(), vec!["CANCEL-ME", "cleaned up"], "{mode}");
    }
}

#[tokio::test]
async fn descendants_that_leave_the_process_group_are_killed_too() {
    let app = app_dir();
    for (mode, sandbox) in both() {
        let marker = unique_sleep_arg();
        // setsid(1) moves the sleep into its own session and group, out of
        // reach of a plain killpg on the step's group.
        let r = run_in(
            &sandbox,
            app.path(),
            &format!("setsid sleep {marker} & sleep 0.2; echo CANCEL-ME; wait"),
            Duration::from_secs(60),
            CancellationToken::new(),
            &[],
        )
        .await;
        assert!(matches!(r.result, Err(StepError::Cancelled { .. })), "{mode}");
        assert_no_process_with(&marker, mode).await;
    }
}

#[test]
fn parses_proc_stat_with_awkward_command_names() {
    let p = parse_stat("4242 (we ird) (name)) S 17 4242 4242 0 -1 4194560 99").unwrap();
    assert_eq!((p.pid, p.ppid, p.pgid, p.state), (4242, 17, 4242, 'S'));
    assert!(parse_stat("garbage").is_none());
}

#[tokio::test]
async fn background_processes_left_by_a_successful_step_are_killed() {
    let app = app_dir();
    for (mode, sandbox) in both() {
        // One child detached from the pipes, one still holding stdout: the
        // step must neither hang on the open pipe nor leave either behind.
        let detached = unique_sleep_arg();
        let holding = unique_sleep_arg();
        let r = run(
            &sandbox,
            app.path(),
            &format!("sleep {detached} >/dev/null 2>&1 & sleep {holding} & echo done"),
        )
        .await;
        r.result.as_ref().unwrap();
        assert!(r.elapsed < Duration::from_secs(30), "{mode}: {:?}", r.elapsed);
        assert_eq!(r.stdout(), vec!["done"]);
        assert_no_process_with(&detached, mode).await;
        assert_no_process_with(&holding, mode).await;
    }
}

#[tokio::test]
async fn kill_process_group_stops_a_running_tree() {
    let app = app_dir();
    for (mode, sandbox) in both() {
        let marker = unique_sleep_arg();
        let spec = SandboxSpec {
            app_dir: app.path(),
            argv: vec!["sh".into(), "-c".into(), format!("trap '' TERM; sleep {marker}")],
            env: vec![],
            network: true,
        };
        let mut child = sandbox.command(&spec).spawn().unwrap();
        let pid = child.id().unwrap();
        // Wait until the sleep is running, so there is a real tree to kill.
        for _ in 0..100 {
            if !processes_with_arg(&marker).is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!processes_with_arg(&marker).is_empty(), "{mode}: never started");
        tokio::task::spawn_blocking(move || kill_process_group(pid))
            .await
            .unwrap();
        let status = child.wait().await.unwrap();
        assert!(!status.success());
        assert_no_process_with(&marker, mode).await;
    }
    // The dangerous pids are refused rather than signalled.
    kill_process_group(0);
    kill_process_group(1);
}

// ----- real toolchains in the sandbox -----------------------------------------

fn write(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, body).unwrap();
}

#[tokio::test]
async fn node_project_without_dependencies_builds_and_serves_in_the_sandbox() {
    let app = app_dir();
    let dir = app.path();
    write(
        dir,
        "package.json",
        r#"{"name":"hello","scripts":{"build":"node build.js","start":"node server.js"}}"#,
    );
    write(
        dir,
        "build.js",
        "require('fs').mkdirSync('dist',{recursive:true});\
         require('fs').writeFileSync('dist/msg.txt','built in '+process.cwd());\
         console.log('build ok, HOME='+process.env.HOME);",
    );
    write(
        dir,
        "server.js",
        "const fs=require('fs');\
         const srv=require('http').createServer((q,s)=>s.end(fs.readFileSync('dist/msg.txt')))\
         .listen(process.env.PORT,'127.0.0.1',()=>console.log('listening'));\
         process.on('SIGTERM',()=>{console.log('graceful shutdown');srv.close(()=>process.exit(0));});",
    );
    let plan = detect(dir, &BuildSettings::default()).unwrap();
    assert!(plan.steps.iter().all(|s| s.name != "install"), "{plan:?}");
    let sandbox = bwrap();
    for s in &plan.steps {
        let mut lines = Vec::new();
        run_step(
            &sandbox,
            dir,
            s,
            &[],
            Duration::from_secs(60),
            CancellationToken::new(),
            &mut |_, l| lines.push(l),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}: {lines:?}"));
        if s.name == "build" {
            assert!(lines.iter().any(|l| l == "build ok, HOME=/app"), "{lines:?}");
        }
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("dist/msg.txt")).unwrap(),
        "built in /app"
    );

    // Serve: the start command runs in the sandbox and is reachable from the
    // host on 127.0.0.1:PORT because the network namespace is shared.
    let ServePlan::Process { command, .. } = &plan.serve else {
        panic!("expected a process: {plan:?}");
    };
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let spec = SandboxSpec {
        app_dir: dir,
        argv: crate::sandbox::shell_argv(command),
        env: vec![("PORT".into(), port.to_string())],
        network: true,
    };
    let started = Instant::now();
    let mut child = sandbox.command(&spec).stdout(Stdio::piped()).spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(10), stdout.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.as_deref(), Some("listening"));
    eprintln!("node server ready in {:?}", started.elapsed());
    let body = http_get(port).await;
    assert!(body.ends_with("built in /app"), "{body}");
    let stopping = Instant::now();
    terminate_child_tree(&mut child, KILL_GRACE).await;
    // With bwrap the sandbox's processes are SIGKILLed by the kernel as
    // the pid namespace dies, which can finish a moment after the outer
    // bwrap has been reaped.
    let mut closed = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("node server gone after {:?}", stopping.elapsed());
    assert!(closed, "server still listening 1 s after terminate_child_tree");
    let last = tokio::time::timeout(Duration::from_secs(2), stdout.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        last.as_deref(),
        Some("graceful shutdown"),
        "stopped in {:?}",
        stopping.elapsed()
    );
}

async fn http_get(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    sock.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").await.unwrap();
    let mut out = String::new();
    sock.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn python_venv_without_pip_is_created_and_works_at_app() {
    let app = app_dir();
    let dir = app.path();
    write(dir, "requirements.txt", "# standard library only\n");
    write(dir, "app.py", "print('hi')\n");
    let plan = detect(dir, &BuildSettings::default()).unwrap();
    assert_eq!(plan.steps.len(), 1);
    assert_eq!(plan.steps[0].command, "python3 -m venv --without-pip .venv");
    let sandbox = bwrap();
    let mut lines = Vec::new();
    let outcome = run_step(
        &sandbox,
        dir,
        &plan.steps[0],
        &[],
        Duration::from_secs(120),
        CancellationToken::new(),
        &mut |_, l| lines.push(l),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {lines:?}"));
    eprintln!("venv --without-pip in the sandbox: {:?}", outcome.duration);
    let venv_python: PathBuf = dir.join(".venv/bin/python");
    assert!(venv_python.exists(), "{lines:?}");

    let mut lines = Vec::new();
    run_step(
        &sandbox,
        dir,
        &step(
            "check",
            ".venv/bin/python -c 'import sys; print(1); print(sys.prefix); print(sys.executable)'",
        ),
        &[],
        Duration::from_secs(30),
        CancellationToken::new(),
        &mut |_, l| lines.push(l),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {lines:?}"));
    assert_eq!(lines, vec!["1", "/app/.venv", "/app/.venv/bin/python"]);

    // And the plan's start command finds the venv's python via PATH-free
    // relative invocation.
    let ServePlan::Process { command, .. } = &plan.serve else {
        panic!("{plan:?}");
    };
    let mut lines = Vec::new();
    run_step(
        &sandbox,
        dir,
        &step("start", command),
        &[],
        Duration::from_secs(30),
        CancellationToken::new(),
        &mut |_, l| lines.push(l),
    )
    .await
    .unwrap();
    assert_eq!(lines, vec!["hi"]);
}

#[test]
fn tree_usage_counts_a_live_process_and_none_for_a_gone_one() {
    let own = tree_usage(std::process::id()).expect("this process is alive");
    assert!(own.rss_bytes > 1024 * 1024, "{own:?}");
    assert!(clock_ticks_per_second() > 0);
    assert_eq!(tree_usage(u32::MAX - 1), None);
}
