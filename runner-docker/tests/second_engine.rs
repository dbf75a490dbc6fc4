//! A second, real dockerd (its own data root, exec root, pid file, unix socket and a
//! TLS port on 127.0.0.1, certificates made here with openssl), found the ways the
//! docker CLI finds an engine: a context on its unix socket (current context and
//! `DOCKER_CONTEXT`), `DOCKER_HOST` + `DOCKER_TLS_VERIFY` + `DOCKER_CERT_PATH`, and a
//! context with TLS material. A wrong certificate authority is a typed TLS error.
//! Its own test binary, one test: it sets the process's environment.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use runner_docker::{connect, resolve_endpoint, DockerError, EndpointSource, Unreachable};
use sha2::{Digest, Sha256};

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A certificate authority in `dir` (`ca.pem`, `ca-key.pem`), and certificates it
/// signs: `<name>-cert.pem` / `<name>-key.pem` with the given extensions.
fn authority(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    run(Command::new("openssl")
        .current_dir(dir)
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=runner-test-ca", "-keyout", "ca-key.pem"])
        .args(["-out", "ca.pem"]));
}

fn sign(dir: &Path, name: &str, extensions: &str) {
    std::fs::write(dir.join(format!("{name}.ext")), extensions).unwrap();
    run(Command::new("openssl")
        .current_dir(dir)
        .args([
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-subj", &format!("/CN={name}")])
        .args(["-keyout", &format!("{name}-key.pem")])
        .args(["-out", &format!("{name}.csr")]));
    run(Command::new("openssl")
        .current_dir(dir)
        .args([
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
        ])
        .args(["-CAkey", "ca-key.pem", "-CAcreateserial", "-days", "2"])
        .args(["-extfile", &format!("{name}.ext")])
        .args(["-out", &format!("{name}-cert.pem")]));
}

/// The docker CLI's layout of client TLS material: `ca.pem`, `cert.pem`, `key.pem`.
fn client_material(to: &Path, ca_from: &Path, client_from: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::copy(ca_from.join("ca.pem"), to.join("ca.pem")).unwrap();
    std::fs::copy(client_from.join("client-cert.pem"), to.join("cert.pem")).unwrap();
    std::fs::copy(client_from.join("client-key.pem"), to.join("key.pem")).unwrap();
}

/// A bridge interface of its own for the second engine, deleted when dropped.
struct Bridge(String);

impl Bridge {
    fn add(name: &str) -> Bridge {
        let _ = Command::new("ip").args(["link", "del", name]).status();
        run(Command::new("ip").args(["link", "add", name, "type", "bridge"]));
        Bridge(name.to_string())
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

/// The second engine, stopped by its pid when dropped.
struct SecondEngine {
    child: Child,
    dir: PathBuf,
}

impl SecondEngine {
    fn start(dir: &Path, port: u16, certs: &Path, bridge: &str) -> SecondEngine {
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", dir.join("docker.sock").display()))
            .arg("-H")
            .arg(format!("tcp://127.0.0.1:{port}"))
            .arg("--tlsverify")
            .arg("--tlscacert")
            .arg(certs.join("ca.pem"))
            .arg("--tlscert")
            .arg(certs.join("server-cert.pem"))
            .arg("--tlskey")
            .arg(certs.join("server-key.pem"))
            // Its own bridge: with `--bridge none` dockerd deletes `docker0`, the
            // first engine's.
            .args(["--bridge", bridge, "--iptables=false", "--ip6tables=false"])
            .args(["--storage-driver", "vfs"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        SecondEngine {
            child,
            dir: dir.to_path_buf(),
        }
    }

    /// Waits until the engine says it listens on both addresses (its log), or fails
    /// with the log.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
            if log.matches("API listen on").count() >= 2 {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the second dockerd exited ({status}):\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "the second dockerd did not start:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for SecondEngine {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Connects (negotiating afresh) and expects a typed TLS failure.
async fn tls_refusal() -> DockerError {
    runner_docker::forget_negotiated_version();
    let err = connect().await.unwrap_err();
    assert!(
        matches!(
            err,
            DockerError::EngineDown {
                why: Unreachable::Tls,
                ..
            }
        ),
        "{err:?}"
    );
    err
}

fn write_context(config: &Path, name: &str, host: &str, tls: Option<&Path>) {
    let digest: String = Sha256::digest(name.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let meta = config.join("contexts/meta").join(&digest);
    std::fs::create_dir_all(&meta).unwrap();
    std::fs::write(
        meta.join("meta.json"),
        format!(r#"{{"Name":"{name}","Metadata":{{}},"Endpoints":{{"docker":{{"Host":"{host}","SkipTLSVerify":false}}}}}}"#),
    )
    .unwrap();
    if let Some(material) = tls {
        client_material(
            &config.join("contexts/tls").join(&digest).join("docker"),
            material,
            material,
        );
    }
}

/// The data root of the engine `connect` reaches: which engine it is.
async fn reached() -> String {
    let docker = connect().await.unwrap();
    docker
        .bollard()
        .info()
        .await
        .unwrap()
        .docker_root_dir
        .unwrap()
}

fn docker0() -> bool {
    Command::new("ip")
        .args(["link", "show", "docker0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn a_second_engine_through_contexts_and_tls() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let tools = ["dockerd", "openssl", "ip"].iter().all(|t| {
        Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !runner_core::testing::engine_gate(
        "a second dockerd (root, dockerd, openssl, ip)",
        root && tools,
    ) {
        return;
    }
    // Short paths: the engine's sockets live under this directory.
    let tmp = tempfile::Builder::new()
        .prefix("re2-")
        .tempdir_in("/tmp")
        .unwrap();
    let certs = tmp.path().join("certs");
    authority(&certs);
    sign(
        &certs,
        "server",
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    );
    sign(&certs, "client", "extendedKeyUsage=clientAuth\n");
    let other_ca = tmp.path().join("other-ca");
    authority(&other_ca);
    sign(&other_ca, "client", "extendedKeyUsage=clientAuth\n");

    let port = free_port();
    let engine_dir = tmp.path().join("e");
    std::fs::create_dir_all(&engine_dir).unwrap();
    let had_docker0 = docker0();
    let bridge = Bridge::add("runner-e2");
    let mut engine = SecondEngine::start(&engine_dir, port, &certs, &bridge.0);
    engine.wait_ready();
    let data_root = engine_dir.join("data").display().to_string();

    let config = tmp.path().join("docker-config");
    std::fs::create_dir_all(&config).unwrap();
    std::env::remove_var("DOCKER_HOST");
    std::env::remove_var("DOCKER_CONTEXT");
    std::env::remove_var("DOCKER_TLS_VERIFY");
    std::env::remove_var("DOCKER_CERT_PATH");
    std::env::set_var("DOCKER_CONFIG", &config);

    // A context on the second engine's unix socket, as the current context...
    let socket = format!("unix://{}", engine_dir.join("docker.sock").display());
    write_context(&config, "second", &socket, None);
    std::fs::write(config.join("config.json"), r#"{"currentContext":"second"}"#).unwrap();
    assert_eq!(
        resolve_endpoint().unwrap().source,
        EndpointSource::CurrentContext("second".into())
    );
    assert_eq!(reached().await, data_root);
    // ... and through DOCKER_CONTEXT, over a current context of the first engine.
    std::fs::write(
        config.join("config.json"),
        r#"{"currentContext":"default"}"#,
    )
    .unwrap();
    assert_ne!(
        reached().await,
        data_root,
        "the default is the first engine"
    );
    std::env::set_var("DOCKER_CONTEXT", "second");
    assert_eq!(reached().await, data_root);
    std::env::remove_var("DOCKER_CONTEXT");

    // TLS through DOCKER_HOST + DOCKER_TLS_VERIFY + DOCKER_CERT_PATH.
    let tcp = format!("tcp://127.0.0.1:{port}");
    let good = tmp.path().join("good");
    client_material(&good, &certs, &certs);
    std::env::set_var("DOCKER_HOST", &tcp);
    std::env::set_var("DOCKER_TLS_VERIFY", "1");
    std::env::set_var("DOCKER_CERT_PATH", &good);
    let endpoint = resolve_endpoint().unwrap();
    assert_eq!(
        endpoint.tls.as_ref().map(|t| t.dir.clone()),
        Some(good.clone())
    );
    assert_eq!(reached().await, data_root);

    // A CA that did not sign the engine's certificate: a typed TLS error naming the
    // endpoint, whether or not the client certificate is one the engine trusts.
    for (name, client) in [("wrong-ca", &certs), ("wrong-all", &other_ca)] {
        let wrong = tmp.path().join(name);
        client_material(&wrong, &other_ca, client);
        std::env::set_var("DOCKER_CERT_PATH", &wrong);
        runner_docker::forget_negotiated_version();
        let err = connect().await.unwrap_err();
        match &err {
            DockerError::EngineDown { why, endpoint, .. } => {
                assert_eq!(*why, Unreachable::Tls, "{err:?}");
                assert_eq!(endpoint, &tcp);
            }
            other => panic!("not EngineDown: {other:?}"),
        }
    }
    // A client certificate the engine does not trust (the right CA for the engine):
    // the engine's refusal is a typed TLS error too.
    let untrusted = tmp.path().join("untrusted");
    client_material(&untrusted, &certs, &other_ca);
    std::env::set_var("DOCKER_CERT_PATH", &untrusted);
    tls_refusal().await;
    // Missing material is named before any connection.
    std::env::set_var("DOCKER_CERT_PATH", tmp.path().join("nothing-here"));
    let err = tls_refusal().await;
    assert!(format!("{:?}", err).contains("nothing-here"), "{err:?}");
    std::env::remove_var("DOCKER_HOST");
    std::env::remove_var("DOCKER_TLS_VERIFY");
    std::env::remove_var("DOCKER_CERT_PATH");

    // TLS through a context holding the material.
    write_context(&config, "second-tls", &tcp, Some(&certs));
    std::env::set_var("DOCKER_CONTEXT", "second-tls");
    let endpoint = resolve_endpoint().unwrap();
    assert!(endpoint.tls.is_some(), "{endpoint}");
    assert_eq!(reached().await, data_root);
    std::env::remove_var("DOCKER_CONTEXT");
    drop(engine);
    drop(bridge);
    assert_eq!(
        docker0(),
        had_docker0,
        "the first engine's bridge is left as it was"
    );
}
