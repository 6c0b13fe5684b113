//! A throwaway PostgreSQL server for tests and benchmarks (not used by nixos-pxe itself): Debian's
//! `initdb` and `pg_ctl` (package `postgresql`) make and start a cluster in a directory of its
//! own, listening only on a unix socket in that directory (`listen_addresses=''`), never the
//! machine's own service. initdb refuses to run as root, so as root the cluster belongs to the
//! `postgres` user the package creates (`runuser`). A watcher process stops the server and
//! removes the directory when the process that started it ends, however it ends.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    /// Run the server's programs as this user (None: as ourselves).
    user: Option<String>,
}

/// The newest `/usr/lib/postgresql/<version>/bin` that has `initdb`.
fn bin_dir() -> Result<PathBuf, String> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("/usr/lib/postgresql: {e} (install Debian's postgresql, listed in dev/packages.txt)"))?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b).ok_or_else(|| "no /usr/lib/postgresql/*/bin/initdb (install Debian's postgresql)".to_string())
}

impl Cluster {
    /// A new cluster, started. `durable: false` turns fsync off (the tests' speed; a server
    /// stopped with `-m immediate` still keeps what the OS has).
    pub fn start(tag: &str, durable: bool) -> Result<Cluster, String> {
        Self::start_in(&std::env::temp_dir(), tag, durable)
    }

    /// [`Cluster::start`] in a directory below `parent` (which the `postgres` user can reach).
    pub fn start_in(parent: &Path, tag: &str, durable: bool) -> Result<Cluster, String> {
        let bin = bin_dir()?;
        let root = rustix::process::geteuid().is_root();
        let user = root.then(|| "postgres".to_string());
        let dir = parent.join(format!("nixos-pxe-pg-{tag}-{}-{}", std::process::id(), std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let cluster = Cluster { dir, bin, user };
        // Registered before the server exists: whatever ends this process, it goes.
        let cleanup = format!(
            "{} -D {} stop -m immediate -w >/dev/null 2>&1; rm -rf {}",
            cluster.program("pg_ctl"),
            shell_word(&cluster.data()),
            shell_word(&cluster.dir)
        );
        let script = format!("while kill -0 {pid} 2>/dev/null; do sleep 1; done; {cleanup}; true", pid = std::process::id());
        std::os::unix::process::CommandExt::process_group(Command::new("sh").args(["-c", &script]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()), 0)
            .spawn()
            .map_err(|e| format!("start the clean-up watcher: {e}"))?;
        if let Some(user) = &cluster.user {
            let status = Command::new("chown").args([user.as_str(), &cluster.dir.display().to_string()]).status().map_err(|e| format!("chown: {e}"))?;
            if !status.success() {
                return Err(format!("chown {user} {}: {status} (is Debian's postgresql installed? it creates the user)", cluster.dir.display()));
            }
        }
        cluster.run("initdb", &["-D", &cluster.data().display().to_string(), "--auth=trust", "--username=postgres", "--encoding=UTF8", "--locale=C"])?;
        let mut conf = format!(
            "listen_addresses = ''\nunix_socket_directories = '{}'\nmax_connections = 200\nshared_buffers = 64MB\n",
            cluster.dir.display()
        );
        if !durable {
            conf.push_str("fsync = off\n");
        }
        let conf_file = cluster.data().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_file).map_err(|e| format!("{}: {e}", conf_file.display()))?;
        text.push_str(&conf);
        std::fs::write(&conf_file, text).map_err(|e| format!("{}: {e}", conf_file.display()))?;
        cluster.start_server()?;
        Ok(cluster)
    }

    /// One cluster for the whole test binary, started at the first call.
    pub fn shared() -> &'static Cluster {
        static SHARED: OnceLock<Cluster> = OnceLock::new();
        SHARED.get_or_init(|| Cluster::start("shared", false).unwrap_or_else(|e| panic!("a PostgreSQL server for the tests: {e}")))
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn program(&self, name: &str) -> String {
        let path = shell_word(&self.bin.join(name));
        match &self.user {
            Some(user) => format!("runuser -u {user} -- {path}"),
            None => path,
        }
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let path = self.bin.join(program);
        let mut command = match &self.user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&path);
                c
            }
            None => Command::new(&path),
        };
        // Started from the cluster's directory: the postgres user may not read the caller's.
        let out = command.args(args).current_dir(&self.dir).stdin(Stdio::null()).output().map_err(|e| format!("{program}: {e}"))?;
        if !out.status.success() {
            return Err(format!("{program} {}: {}\n{}{}", args.join(" "), out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)));
        }
        Ok(())
    }

    /// Starts the server (again), waiting until it takes connections.
    pub fn start_server(&self) -> Result<(), String> {
        let log = self.dir.join("server.log").display().to_string();
        self.run("pg_ctl", &["-D", &self.data().display().to_string(), "-l", &log, "-w", "-t", "60", "start"])
    }

    /// Stops the server: `fast` (clients told, transactions rolled back) or `immediate` (as a
    /// crash: recovery at the next start).
    pub fn stop_server(&self, mode: &str) -> Result<(), String> {
        self.run("pg_ctl", &["-D", &self.data().display().to_string(), "-m", mode, "-w", "-t", "60", "stop"])
    }

    /// The connection string of database `name` on this cluster.
    pub fn url(&self, name: &str) -> String {
        format!("host={} user=postgres dbname={name}", self.dir.display())
    }

    /// A new, empty database; its connection string.
    pub fn create_database(&self, name: &str) -> Result<String, String> {
        // CREATE DATABASE copies template1 and fails while another copy of it is under way.
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut admin = postgres::Client::connect(&self.url("postgres"), postgres::NoTls).map_err(|e| format!("connect to {}: {e}", self.dir.display()))?;
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\""))
            .and_then(|()| admin.batch_execute(&format!("CREATE DATABASE \"{name}\""))).map_err(|e| format!("create database {name}: {}", e.as_db_error().map_or(e.to_string(), |d| d.message().to_string())))?;
        Ok(self.url(name))
    }

    /// A fresh database with a name no other call in this process got.
    pub fn fresh_database(&self, tag: &str) -> Result<String, String> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.create_database(&format!("{}_{n}", tag.to_ascii_lowercase()))
    }

    /// The server's log, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

fn shell_word(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', "'\\''"))
}
