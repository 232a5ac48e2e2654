//! Sandbox tests with the real bwrap and real processes. Escape tests always
//! pair the sandboxed attempt with an unsandboxed control run that *does*
//! succeed, so they cannot pass just because the command was broken.

use super::*;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn run(sandbox: &Sandbox, app_dir: &Path, script: &str) -> Output {
    run_spec(
        sandbox,
        &SandboxSpec {
            app_dir,
            argv: vec!["sh".into(), "-c".into(), script.into()],
            env: vec![],
            network: true,
        },
    )
    .await
}

async fn run_spec(sandbox: &Sandbox, spec: &SandboxSpec<'_>) -> Output {
    let out = sandbox
        .command(spec)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .expect("spawn");
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The sandboxed flavour; these tests require a working bwrap.
fn bwrap() -> Sandbox {
    let s = Sandbox::detect();
    assert!(
        s.is_sandboxed(),
        "bubblewrap must be installed and working to run these tests (apt-get install bubblewrap)"
    );
    s
}

fn app_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("app");
    std::fs::create_dir(&app).unwrap();
    (tmp, app)
}

#[tokio::test]
async fn cannot_read_a_sibling_folder() {
    let (tmp, app) = app_dir();
    let secret_dir = tmp.path().join("other-app");
    std::fs::create_dir(&secret_dir).unwrap();
    let secret = secret_dir.join("secret.txt");
    std::fs::write(&secret, "TOPSECRET-berth-test").unwrap();
    let script = format!(
        "cat '{}'; cat /app/../other-app/secret.txt; ls '{}'",
        secret.display(),
        tmp.path().display()
    );

    // Control: without the sandbox the same command reads the secret.
    let open = run(&Sandbox::unsandboxed(), &app, &script).await;
    assert!(open.stdout.contains("TOPSECRET-berth-test"), "{}", open.stdout);

    let boxed = run(&bwrap(), &app, &script).await;
    assert!(!boxed.stdout.contains("TOPSECRET"), "leak: {}", boxed.stdout);
    assert!(!boxed.stdout.contains("other-app"), "leak: {}", boxed.stdout);
    assert_ne!(boxed.code, Some(0));
    assert!(boxed.stderr.contains("No such file"), "{}", boxed.stderr);
}

#[tokio::test]
async fn host_root_home_and_berth_files_are_invisible() {
    let (_tmp, app) = app_dir();
    // This test binary lives in berth's build tree: a stand-in for berth's
    // data dir, which must not be reachable either.
    let exe = std::env::current_exe().unwrap();
    let script = format!(
        "ls -A /root 2>&1; echo; test -e '{}' && echo EXE-VISIBLE; ls /; cat /etc/shadow 2>&1 | head -c 40",
        exe.display()
    );

    let open = run(&Sandbox::unsandboxed(), &app, &script).await;
    assert!(open.stdout.contains("EXE-VISIBLE"), "control: {}", open.stdout);

    let boxed = run(&bwrap(), &app, &script).await;
    assert!(!boxed.stdout.contains("EXE-VISIBLE"), "{}", boxed.stdout);
    assert!(boxed.stdout.contains("No such file"), "{}", boxed.stdout);
    if let Ok(entries) = std::fs::read_dir("/root") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                !boxed.stdout.lines().any(|l| l == name),
                "host /root entry {name} visible: {}",
                boxed.stdout
            );
        }
    }
    let root: Vec<&str> = boxed
        .stdout
        .lines()
        .skip_while(|l| !l.is_empty())
        .skip(1)
        .take_while(|l| !l.contains("shadow"))
        .collect();
    for forbidden in ["root", "home", "work", "srv", "var", "mnt"] {
        assert!(!root.contains(&forbidden), "/{forbidden} visible: {root:?}");
    }
    assert!(root.contains(&"app") && root.contains(&"usr"), "{root:?}");
}

#[tokio::test]
async fn only_app_and_a_private_tmp_are_writable() {
    let (_tmp, app) = app_dir();
    let marker = format!("berth-sandbox-tmp-{}", std::process::id());
    let script = format!(
        "for p in /usr/x /etc/x /x /opt/x /etc/ssl/x /proc/x; do touch $p 2>/dev/null && echo WROTE $p; done; \
         echo app > /app/written && echo tmp > /tmp/{marker} && echo OK"
    );
    let out = run(&bwrap(), &app, &script).await;
    assert_eq!(out.stdout.trim(), "OK", "{} {}", out.stdout, out.stderr);
    assert_eq!(std::fs::read_to_string(app.join("written")).unwrap(), "app\n");
    assert!(
        !Path::new("/tmp").join(&marker).exists(),
        "sandbox /tmp must be private"
    );
}

#[tokio::test]
async fn environment_is_exactly_home_path_and_the_given_vars() {
    let (_tmp, app) = app_dir();
    let spec = SandboxSpec {
        app_dir: &app,
        argv: vec!["/usr/bin/env".into()],
        env: vec![("PORT".into(), "4321".into()), ("FOO".into(), "a b=c".into())],
        network: true,
    };
    let parse = |s: &str| -> BTreeMap<String, String> {
        s.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let boxed = parse(&run_spec(&bwrap(), &spec).await.stdout);
    let expected: BTreeMap<String, String> = [
        ("FOO", "a b=c"),
        ("HOME", "/app"),
        ("PATH", SANDBOX_PATH),
        ("PORT", "4321"),
        // bwrap's --chdir exports the working directory.
        ("PWD", "/app"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(boxed, expected);

    let open = parse(&run_spec(&Sandbox::unsandboxed(), &spec).await.stdout);
    let app_str = app.to_string_lossy().into_owned();
    assert_eq!(open["HOME"], app_str);
    assert_eq!(
        open["PATH"],
        format!(
            "{app_str}/node_modules/.bin:{app_str}/.venv/bin:{app_str}/.cache/tools/bin:/usr/local/bin:/usr/bin:/bin"
        )
    );
    assert_eq!(open.len(), 4, "{open:?}");
}

#[tokio::test]
async fn working_dir_and_app_tools_on_path() {
    let (_tmp, app) = app_dir();
    let bin = app.join("node_modules/.bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("hello-tool"), "#!/bin/sh\necho hello from $(pwd)\n").unwrap();
    std::fs::set_permissions(bin.join("hello-tool"), std::fs::Permissions::from_mode(0o755)).unwrap();

    let boxed = run(&bwrap(), &app, "hello-tool").await;
    assert_eq!(boxed.stdout.trim(), "hello from /app", "{}", boxed.stderr);
    let open = run(&Sandbox::unsandboxed(), &app, "hello-tool").await;
    assert_eq!(open.stdout.trim(), format!("hello from {}", app.display()));
}

#[tokio::test]
async fn sandboxed_commands_have_no_capabilities() {
    let (_tmp, app) = app_dir();
    let out = run(&bwrap(), &app, "grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status; id -u").await;
    for line in out.stdout.lines().filter(|l| l.starts_with("Cap")) {
        assert!(line.ends_with("0000000000000000"), "capability left: {line}");
    }
    if nix::unistd::geteuid().is_root() {
        assert_eq!(out.stdout.lines().last(), Some("65534"), "{}", out.stdout);
    }
}

#[tokio::test]
async fn network_is_shared_with_the_host_unless_disabled() {
    let (_tmp, app) = app_dir();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!(
        "import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\ns.sendall(b'hello from the sandbox')\ns.close()\nprint('sent')"
    );
    let spec = |network| SandboxSpec {
        app_dir: &app,
        argv: vec!["python3".into(), "-c".into(), script.clone()],
        env: vec![],
        network,
    };
    let sandbox = bwrap();
    let shared = spec(true);
    let (out, accepted) = tokio::join!(run_spec(&sandbox, &shared), async {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut sock, &mut buf)
            .await
            .unwrap();
        buf
    });
    assert_eq!(out.stdout.trim(), "sent", "{}", out.stderr);
    assert_eq!(accepted, "hello from the sandbox");

    let out = run_spec(&sandbox, &spec(false)).await;
    assert_ne!(out.code, Some(0));
    assert!(!out.stdout.contains("sent"));
}

#[tokio::test]
async fn child_leads_its_own_process_group() {
    let (_tmp, app) = app_dir();
    for sandbox in [bwrap(), Sandbox::unsandboxed()] {
        let spec = SandboxSpec {
            app_dir: &app,
            argv: vec!["sleep".into(), "30".into()],
            env: vec![],
            network: true,
        };
        let mut child = sandbox.command(&spec).spawn().unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
        assert_eq!(nix::unistd::getpgid(Some(pid)).unwrap(), pid);
        assert_ne!(
            nix::unistd::getpgid(Some(pid)).unwrap(),
            nix::unistd::getpgrp(),
            "child must not share the test's process group"
        );
        child.kill().await.unwrap();
    }
}

#[tokio::test]
async fn resource_limits_are_applied() {
    let (_tmp, app) = app_dir();
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    let want = 65_536u64.min(hard);
    for sandbox in [bwrap(), Sandbox::unsandboxed()] {
        assert!(sandbox.prlimit.is_some(), "prlimit (util-linux) should be installed");
        let out = run(&sandbox, &app, "ulimit -n; ulimit -c").await;
        assert_eq!(out.stdout, format!("{want}\n0\n"), "{}", out.stderr);
    }
    let limited = bwrap().with_limits(ResourceLimits {
        nofile: Some(64),
        core_bytes: None,
        file_size_bytes: None,
    });
    let out = run(&limited, &app, "ulimit -n").await;
    assert_eq!(out.stdout.trim(), "64");
}

#[tokio::test]
async fn sandbox_starts_again_and_again() {
    let (_tmp, app) = app_dir();
    let sandbox = bwrap();
    // Warm up page cache, then measure.
    run(&sandbox, &app, "true").await;
    let started = Instant::now();
    for _ in 0..10 {
        let out = run(&sandbox, &app, "true").await;
        assert_eq!(out.code, Some(0), "{}", out.stderr);
    }
    // Its cost is a benchmark figure, not a test condition: printed for the curious.
    let per_run = started.elapsed() / 10;
    eprintln!("bwrap + sh true: {:.1} ms per run", per_run.as_secs_f64() * 1000.0);
}

/// Every process of a tree: the leader and its descendants, from `/proc`.
fn tree_pids(leader: u32) -> Vec<u32> {
    let mut pids = vec![leader];
    let mut i = 0;
    while i < pids.len() {
        let parent = pids[i];
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(parent) && !pids.contains(&pid) {
                pids.push(pid);
            }
        }
        i += 1;
    }
    pids
}

#[tokio::test]
async fn secrets_reach_the_command_but_no_process_argv() {
    let (_tmp, app) = app_dir();
    let secret = "sk-live-berth-argv-canary-8d1f";
    let spec = SandboxSpec {
        app_dir: &app,
        argv: vec![
            "sh".into(),
            "-c".into(),
            "echo \"$API_KEY\" > /app/seen; exec sleep 30".into(),
        ],
        env: vec![("API_KEY".into(), secret.into())],
        network: true,
    };
    let mut child = bwrap().command(&spec).spawn().unwrap();
    let leader = child.id().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !app.join("seen").exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(std::fs::read_to_string(app.join("seen")).unwrap().trim(), secret);
    let pids = tree_pids(leader);
    assert!(pids.len() >= 2, "the sandbox and its command: {pids:?}");
    for pid in pids {
        let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&argv).contains(secret),
            "secret in the argv of pid {pid}: {}",
            String::from_utf8_lossy(&argv).replace('\0', " ")
        );
    }
    child.kill().await.unwrap();
}

#[tokio::test]
async fn a_confined_command_runs_as_its_own_host_uid() {
    if !nix::unistd::geteuid().is_root() {
        // Switching to another host uid needs root; the server tests cover it as root.
        return;
    }
    let (_tmp, app) = app_dir();
    let uid = 231_457;
    std::os::unix::fs::chown(&app, Some(uid), Some(uid)).unwrap();
    let sandbox = bwrap();
    sandbox
        .can_confine()
        .expect("nsenter and setpriv (util-linux) are installed");
    let confined = sandbox.confined(Confinement {
        uid,
        gid: uid,
        ..Confinement::default()
    });
    let out = run(
        &confined,
        &app,
        "touch /app/made && cat /proc/self/status | grep -E '^(Uid|Gid|CapEff)'",
    )
    .await;
    assert_eq!(out.code, Some(0), "{} {}", out.stdout, out.stderr);
    use std::os::unix::fs::MetadataExt as _;
    let made = std::fs::metadata(app.join("made")).unwrap();
    assert_eq!(
        (made.uid(), made.gid()),
        (uid, uid),
        "files the command writes belong to its uid"
    );

    // Control: unconfined, the sandbox's user is host root in disguise (its files are
    // root's), and it cannot write the confined site's folder.
    let (_tmp2, other) = app_dir();
    let plain = run(&sandbox, &other, "touch /app/plain").await;
    assert_eq!(plain.code, Some(0), "{}", plain.stderr);
    assert_eq!(std::fs::metadata(other.join("plain")).unwrap().uid(), 0);
    let denied = run(&sandbox, &app, "touch /app/intruder").await;
    assert_ne!(denied.code, Some(0));
}
