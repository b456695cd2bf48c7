//! Running the foreign clients (curl, openssl) without blocking the runtime the gateway serves
//! on.

use std::process::{Output, Stdio};

use tokio::io::AsyncWriteExt;

use super::STEP;

/// Runs `program args…`, feeding `stdin` (then closing it), killed after [`STEP`].
pub async fn run(program: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        // A proxy from the environment must not stand between the test and the gateway.
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input).await.unwrap();
        drop(pipe);
    }
    tokio::time::timeout(STEP, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} ran longer than {STEP:?}"))
        .unwrap()
}

/// `curl -sS --max-time 10 args…`.
pub async fn curl(args: &[&str]) -> Output {
    let mut all = vec!["-sS", "--max-time", "10"];
    all.extend_from_slice(args);
    run("curl", &all, None).await
}

/// Standard output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A one-line summary for assertion messages.
pub fn describe(o: &Output) -> String {
    format!("{}; stdout: {:?}; stderr: {:?}", o.status, stdout(o), stderr(o))
}
