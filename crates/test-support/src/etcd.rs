//! Starts a real etcd (from the `etcd-server` package) for a test.
//!
//! etcd listens on free loopback ports with a fresh temp data dir. It is
//! stopped by PID when the handle drops; a shell watchdog also stops it if
//! the test process dies first, so no etcd outlives its test binary.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct EtcdServer {
    pub endpoint: String,
    pub client_port: u16,
    peer_port: u16,
    netns: Option<String>,
    /// TLS material when it serves https with client certificates.
    pub tls: Option<EtcdTls>,
    child: Child,
    _dir: tempfile::TempDir,
}

/// PEM files a TLS etcd was started with: its CA, a client certificate
/// and key that CA signed, and a second CA that signed nothing etcd trusts.
#[derive(Debug, Clone)]
pub struct EtcdTls {
    pub ca: std::path::PathBuf,
    pub client_cert: std::path::PathBuf,
    pub client_key: std::path::PathBuf,
    pub other_ca: std::path::PathBuf,
    pub other_cert: std::path::PathBuf,
    pub other_key: std::path::PathBuf,
    /// A server certificate for 127.0.0.1 the CA signed, and its key.
    pub server_cert: std::path::PathBuf,
    pub server_key: std::path::PathBuf,
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl EtcdTls {
    /// A CA, a server certificate for 127.0.0.1 and a client certificate
    /// it signed, and an unrelated CA with its own client certificate.
    pub fn generate(dir: &std::path::Path) -> EtcdTls {
        // A new P-256 key `name.key` and a request for CN=name, written to
        // `out`: self-signed with `-x509`, else a CSR.
        let key_and_request = |name: &str, out: &str, x509: bool| {
            let (key, subject) = (format!("{name}.key"), format!("/CN={name}"));
            let mut args = vec!["req"];
            if x509 {
                args.extend(["-x509", "-days", "2"]);
            }
            args.extend([
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                out,
                "-subj",
                &subject,
            ]);
            openssl(dir, &args);
        };
        let ca = |name: &str| key_and_request(name, &format!("{name}.pem"), true);
        let signed = |name: &str, by: &str, ext: &str| {
            key_and_request(name, &format!("{name}.csr"), false);
            std::fs::write(dir.join(format!("{name}.ext")), ext).expect("ext");
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    &format!("{by}.pem"),
                    "-CAkey",
                    &format!("{by}.key"),
                    "-CAcreateserial",
                    "-out",
                    &format!("{name}.pem"),
                    "-days",
                    "2",
                    "-extfile",
                    &format!("{name}.ext"),
                ],
            );
        };
        ca("ca");
        ca("other-ca");
        signed(
            "server",
            "ca",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        );
        // The client is also node-1 (the flow service binds a node's name to
        // its certificate's DNS names).
        signed(
            "client",
            "ca",
            "subjectAltName=DNS:node-1\nextendedKeyUsage=clientAuth\n",
        );
        signed("other-client", "other-ca", "extendedKeyUsage=clientAuth\n");
        EtcdTls {
            ca: dir.join("ca.pem"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
            other_ca: dir.join("other-ca.pem"),
            other_cert: dir.join("other-client.pem"),
            other_key: dir.join("other-client.key"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
        }
    }
}

fn healthy(port: u16) -> bool {
    let Ok(mut s) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("\"health\":\"true\"") || body.contains("\"health\": \"true\"")
}

impl EtcdServer {
    /// Starts etcd and waits until it reports healthy. Panics with a clear
    /// message if etcd is not installed (run `make test`, which installs it).
    pub fn start() -> EtcdServer {
        Self::start_in(None)
    }

    /// Starts etcd inside the network namespace at `netns` (a path such as
    /// `/run/netns/x`), listening on that namespace's loopback.
    pub fn start_in_netns(netns: &str) -> EtcdServer {
        Self::start_in(Some(netns))
    }

    /// Starts etcd serving https only, requiring client certificates its
    /// CA signed (certificates generated for the test with openssl).
    pub fn start_tls() -> EtcdServer {
        Self::start_with(None, true)
    }

    fn start_in(netns: Option<&str>) -> EtcdServer {
        Self::start_with(netns, false)
    }

    fn start_with(netns: Option<&str>, tls: bool) -> EtcdServer {
        let which = Command::new("sh").args(["-c", "command -v etcd"]).output();
        if !which.is_ok_and(|o| o.status.success()) {
            panic!("etcd is not installed: run `scripts/setup` (or `make test`), which installs etcd-server");
        }
        let dir = tempfile::tempdir().expect("temp dir for etcd");
        let tls = tls.then(|| {
            let certs = dir.path().join("certs");
            std::fs::create_dir(&certs).expect("certs dir");
            EtcdTls::generate(&certs)
        });
        let (client_port, peer_port) = (crate::free_port(), crate::free_port());
        let child = Self::spawn(netns, &dir, client_port, peer_port, tls.as_ref());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut server = EtcdServer {
            endpoint: format!("{scheme}://127.0.0.1:{client_port}"),
            client_port,
            peer_port,
            netns: netns.map(str::to_string),
            tls,
            child,
            _dir: dir,
        };
        server.wait_ready();
        server
    }

    /// Stops etcd and starts it again on the same ports with the same
    /// data, as a datastore restart looks to its clients.
    pub fn restart(&mut self) {
        let keep = self._dir.path().join("keep");
        std::fs::write(&keep, "").expect("keep marker");
        self.stop();
        std::fs::remove_file(&keep).expect("keep marker");
        self.child = Self::spawn(
            self.netns.as_deref(),
            &self._dir,
            self.client_port,
            self.peer_port,
            self.tls.as_ref(),
        );
        self.wait_ready();
    }

    fn spawn(
        netns: Option<&str>,
        dir: &tempfile::TempDir,
        client_port: u16,
        peer_port: u16,
        tls: Option<&EtcdTls>,
    ) -> Child {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("etcd.log"))
            .expect("etcd log");
        // The watchdog loop ends etcd when the test process ($PARENT) is
        // gone; the data goes too unless a restart asked to keep it.
        let script = r#"etcd "$@" & e=$!; trap 'kill $e 2>/dev/null; wait $e; [ -e "$SCRATCH/keep" ] || rm -rf "$SCRATCH"' EXIT TERM INT
while kill -0 "$PARENT" 2>/dev/null && kill -0 $e 2>/dev/null; do sleep 0.2; done"#;
        let mut cmd = match netns {
            Some(path) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={path}")).arg("sh");
                c
            }
            None => Command::new("sh"),
        };
        cmd.arg("-c")
            .arg(script)
            .arg("etcd-watchdog")
            .args(["--name", "test", "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("test={peer}")])
            .args(["--log-level", "error"])
            .args(tls.into_iter().flat_map(|t| {
                [
                    "--client-cert-auth".into(),
                    format!("--trusted-ca-file={}", t.ca.display()),
                    format!("--cert-file={}", t.server_cert.display()),
                    format!("--key-file={}", t.server_key.display()),
                ]
            }))
            .env("PARENT", std::process::id().to_string())
            .env("SCRATCH", dir.path())
            .env("ETCD_UNSUPPORTED_ARCH", "")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd")
    }

    fn wait_ready(&mut self) {
        let (netns, client_port) = (self.netns.clone(), self.client_port);
        if let Some(t) = self.tls.clone() {
            let deadline = Instant::now() + START_TIMEOUT;
            let url = format!("https://127.0.0.1:{client_port}/health");
            while !Command::new("curl")
                .args(["-sf", "--cacert"])
                .arg(&t.ca)
                .arg("--cert")
                .arg(&t.client_cert)
                .arg("--key")
                .arg(&t.client_key)
                .arg(&url)
                .output()
                .is_ok_and(|o| o.status.success())
            {
                assert!(Instant::now() < deadline, "TLS etcd did not become healthy");
                std::thread::sleep(Duration::from_millis(50));
            }
            return;
        }
        let server = self;
        let deadline = Instant::now() + START_TIMEOUT;
        let ready = || match &netns {
            Some(path) => Command::new("nsenter")
                .arg(format!("--net={path}"))
                .args([
                    "curl",
                    "-sf",
                    &format!("http://127.0.0.1:{client_port}/health"),
                ])
                .output()
                .is_ok_and(|o| o.status.success()),
            None => healthy(client_port),
        };
        while !ready() {
            if let Ok(Some(status)) = server.child.try_wait() {
                let log = std::fs::read_to_string(server._dir.path().join("etcd.log"))
                    .unwrap_or_default();
                panic!("etcd exited during start ({status}):\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not become healthy within {START_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One etcd shared by every test in this test binary. Tests sharing it
    /// must use key prefixes of their own.
    pub fn shared() -> &'static EtcdServer {
        static SHARED: OnceLock<EtcdServer> = OnceLock::new();
        SHARED.get_or_init(EtcdServer::start)
    }

    /// Stops etcd (the watchdog shell kills it on TERM).
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}
