//! A throwaway PostgreSQL for tests (feature `test-support`): `initdb` + `pg_ctl` as the
//! `postgres` user (PostgreSQL refuses root), on a loopback port, in a temp directory; stopped on
//! drop. Where it cannot run it skips with the reason, unless `BERTH_REQUIRE_POSTGRES=1`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Set to 1 (as `scripts/test.sh` does) to fail instead of skipping without PostgreSQL.
const REQUIRE_ENV: &str = "BERTH_REQUIRE_POSTGRES";

fn pg_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").is_file())
        .collect();
    dirs.sort();
    dirs.pop()
}

/// A throwaway PostgreSQL server; stopped (immediately) on drop.
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    _dir: tempfile::TempDir,
    pub url: String,
}

impl Postgres {
    /// One of this server's own programs (`pg_dump`, `psql`), of its version.
    pub fn program(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    /// The URL of another database on this server.
    pub fn url_of(&self, database: &str) -> String {
        match self.url.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{database}"),
            None => self.url.clone(),
        }
    }

    /// Starts one, or `None` (printing why) where it cannot run and the environment does not
    /// require it.
    pub fn start() -> Option<Postgres> {
        let skip = |why: String| {
            if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
                panic!("{REQUIRE_ENV}=1 but PostgreSQL cannot run: {why}");
            }
            eprintln!("skipped: {why}");
            None
        };
        let Some(bin) = pg_bin() else {
            return skip("no PostgreSQL server binaries under /usr/lib/postgresql (apt-get install postgresql)".into());
        };
        if !rustix::process::geteuid().is_root() {
            return skip("starting PostgreSQL as the postgres user needs root".into());
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let sock = dir.path().join("sock");
        std::fs::create_dir_all(&sock).unwrap();
        let st = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success());
        let as_pg = |program: &Path| {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        };
        let out = as_pg(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off -c max_connections=100",
            sock.display()
        );
        let out = as_pg(&bin.join("pg_ctl"))
            .args(["-w", "-t", "60", "-D"])
            .arg(&data)
            .args(["-o", &opts, "-l"])
            .arg(dir.path().join("log"))
            .arg("start")
            .output()
            .unwrap();
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
        assert!(
            out.status.success(),
            "pg_ctl start: {}\n{log}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(Postgres {
            bin,
            data,
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            _dir: dir,
        })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-m", "immediate", "-D"])
            .arg(&self.data)
            .arg("stop")
            .output();
    }
}
