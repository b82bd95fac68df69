//! `weft inject` and `weft uninject` as a user runs them: files,
//! directories and standard input; YAML on stdout, one summary line per
//! workload on stderr; injecting twice changes nothing; a bad annotation
//! value writes nothing and exits 1 naming the file, the object, the
//! annotation and the value.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn weft(args: &[&str], stdin: Option<&str>) -> Run {
    let mut child = Command::new(WEFT)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weft runs");
    let input = stdin.unwrap_or("").to_owned();
    let mut pipe = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || pipe.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("weft ends");
    // A run that refuses its flags exits without reading: a broken pipe.
    let _ = writer.join().expect("writer");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

const DEPLOYMENT: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: app, image: web:1}]
";

const SERVICE: &str =
    "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n";

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("weft-inject-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

#[test]
fn inject_a_directory_then_again_then_uninject() {
    let dir = temp_dir("dir");
    std::fs::write(dir.join("a-web.yaml"), DEPLOYMENT).unwrap();
    std::fs::write(dir.join("b-svc.yml"), SERVICE).unwrap();
    std::fs::write(dir.join("notes.txt"), "not YAML: [").unwrap();

    let once = weft(&["inject", "--manual", path(&dir)], None);
    assert_eq!(once.code, Some(0), "{}", once.stderr);
    let web = dir.join("a-web.yaml");
    assert_eq!(
        once.stderr.trim(),
        format!(
            "✓ {}: deployment/web (namespace shop): injected (manual: the full sidecar)",
            web.display()
        )
    );
    assert!(once.stdout.contains("name: weft-proxy"), "{}", once.stdout);
    assert!(once.stdout.contains("kind: Service"), "{}", once.stdout);

    let twice = weft(&["inject", "--manual", "-"], Some(&once.stdout));
    assert_eq!(twice.code, Some(0), "{}", twice.stderr);
    assert_eq!(twice.stdout, once.stdout, "injecting twice changes nothing");
    assert!(
        twice
            .stderr
            .contains("- -: deployment/web (namespace shop): skipped: already injected"),
        "{}",
        twice.stderr
    );

    let undone = weft(&["uninject", "-"], Some(&once.stdout));
    assert_eq!(undone.code, Some(0), "{}", undone.stderr);
    assert!(!undone.stdout.contains("weft"), "{}", undone.stdout);
    let plain = weft(&["inject", "-"], Some(DEPLOYMENT));
    assert!(
        plain.stdout.contains("weft.dev/inject: enabled"),
        "{}",
        plain.stdout
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn flags_set_what_the_annotations_do_not() {
    let run = weft(
        &[
            "inject",
            "--manual",
            "--proxy-image=local/weft-proxy:dev",
            "--proxy-native-sidecar=false",
            "--trust-domain=example.org",
            "-",
        ],
        Some(DEPLOYMENT),
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.contains("image: local/weft-proxy:dev"));
    assert!(run.stdout.contains("value: example.org"));
    assert!(run.stdout.contains("postStart"));
    let bad = weft(
        &["inject", "--proxy-memory-limit=lots", "-"],
        Some(DEPLOYMENT),
    );
    assert_eq!(bad.code, Some(64), "{}", bad.stderr);
    assert!(
        bad.stderr.contains("'lots' is not a quantity"),
        "{}",
        bad.stderr
    );
}

#[test]
fn a_bad_value_writes_nothing_and_names_it() {
    let bad = DEPLOYMENT.replace(
        "metadata: {labels: {app: web}}",
        "metadata: {labels: {app: web}, annotations: {weft.dev/skip-inbound-ports: \"70000\"}}",
    );
    let run = weft(&["inject", "-"], Some(&bad));
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr.trim(),
        "weft: -: document 1: deployment/web (namespace shop): annotation weft.dev/skip-inbound-ports: port 70000 is out of range 1-65535\nweft: nothing written"
    );
    let missing = weft(&["inject", "/no/such/file.yaml"], None);
    assert_eq!(missing.code, Some(1));
    assert!(
        missing.stderr.contains("/no/such/file.yaml"),
        "{}",
        missing.stderr
    );
    let none = weft(&["inject"], None);
    assert_eq!(none.code, Some(64), "{}", none.stderr);
}
