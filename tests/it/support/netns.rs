//! A second host on this machine: a network namespace joined to the host by a veth pair, and a
//! private cluster that listens on the host's side of it over TCP. A process started with
//! [`NetNs::command`] reaches the cluster only through that link, so dropping the namespace's
//! packets with iptables cuts it off the way a failed network does: no FIN, no RST, silence.
//!
//! Needs root, `ip` and `iptables`; [`NetNs::create`] says why and returns `None` where they
//! are missing.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use diesel::connection::SimpleConnection;
use usage_worker::config::SchemaName;
use usage_worker::db;
use usage_worker::embedded_pg::{Durability, EmbeddedPg};

use super::TestDb;

pub struct NetNs {
    pub name: String,
    veth: String,
    /// The host's address on the link (the cluster listens there).
    pub host_ip: String,
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl NetNs {
    /// A namespace `uw<pid>` linked to the host as 10.213.<n>.2 ↔ 10.213.<n>.1; `None`, saying
    /// why, when this machine cannot make one.
    pub fn create() -> Option<NetNs> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: network namespaces need root");
            return None;
        }
        let pid = std::process::id();
        let subnet = pid % 250 + 1;
        let ns = NetNs {
            name: format!("uw{pid}"),
            veth: format!("uwh{pid}"),
            host_ip: format!("10.213.{subnet}.1"),
        };
        let peer = format!("uwn{pid}");
        let ns_ip = format!("10.213.{subnet}.2/24");
        let host_cidr = format!("{}/24", ns.host_ip);
        let steps: Vec<(&str, Vec<&str>)> = vec![
            ("ip", vec!["netns", "add", &ns.name]),
            (
                "ip",
                vec![
                    "link", "add", &ns.veth, "type", "veth", "peer", "name", &peer,
                ],
            ),
            ("ip", vec!["link", "set", &peer, "netns", &ns.name]),
            ("ip", vec!["addr", "add", &host_cidr, "dev", &ns.veth]),
            ("ip", vec!["link", "set", &ns.veth, "up"]),
            (
                "ip",
                vec![
                    "netns", "exec", &ns.name, "ip", "addr", "add", &ns_ip, "dev", &peer,
                ],
            ),
            (
                "ip",
                vec!["netns", "exec", &ns.name, "ip", "link", "set", &peer, "up"],
            ),
            (
                "ip",
                vec!["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"],
            ),
            // iptables works in the namespace (the cut needs it).
            (
                "ip",
                vec!["netns", "exec", &ns.name, "iptables", "-L", "OUTPUT", "-n"],
            ),
        ];
        for (program, args) in steps {
            if let Err(e) = run(program, &args) {
                eprintln!("skipped: cannot set up a network namespace ({e})");
                return None;
            }
        }
        Some(ns)
    }

    /// `program` run inside the namespace.
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Drops every packet into and out of the namespace: its processes hear nothing more
    /// and the host hears nothing more from them.
    pub fn cut(&self) {
        for chain in ["INPUT", "OUTPUT"] {
            run(
                "ip",
                &[
                    "netns", "exec", &self.name, "iptables", "-A", chain, "-j", "DROP",
                ],
            )
            .expect("cut the namespace off");
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name]);
        let _ = run("ip", &["link", "del", &self.veth]);
    }
}

/// A private cluster that also listens on `address` over TCP and trusts the namespace's
/// subnet; stopped and deleted when dropped.
pub struct TcpCluster {
    pg: Option<EmbeddedPg>,
    dir: PathBuf,
    address: String,
}

impl TcpCluster {
    pub fn start(address: &str) -> TcpCluster {
        let dir = std::env::temp_dir().join(format!("uw-tcp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pg = EmbeddedPg::start(&dir, None, Durability::Throwaway).expect("start a cluster");
        pg.stop().expect("stop the new cluster to configure it");
        let subnet = address.rsplit_once('.').map_or(address, |(net, _)| net);
        append(
            &pg.data_dir().join("postgresql.conf"),
            &format!("listen_addresses = '{address}'\n"),
        );
        append(
            &pg.data_dir().join("pg_hba.conf"),
            &format!("host all all {subnet}.0/24 trust\n"),
        );
        drop(pg);
        let pg = EmbeddedPg::start(&dir, None, Durability::Throwaway).expect("restart the cluster");
        TcpCluster {
            pg: Some(pg),
            dir,
            address: address.to_string(),
        }
    }

    /// A migrated database `uw` of this cluster, reached over the Unix socket.
    pub fn test_db(&self) -> TestDb {
        let mut conn = db::connect(&self.local_url("postgres")).expect("connect");
        conn.batch_execute("CREATE DATABASE uw")
            .expect("create database uw");
        let mut conn = db::connect(&self.local_url("uw")).expect("connect to uw");
        db::run_migrations(&mut conn, &SchemaName::default()).expect("migrate uw");
        TestDb {
            url: self.local_url("uw"),
            name: "uw".into(),
            _alone: None,
        }
    }

    /// `dbname` over the Unix socket, as the superuser.
    pub fn local_url(&self, dbname: &str) -> String {
        self.pg.as_ref().expect("running cluster").url(dbname)
    }

    /// `dbname` over TCP, as the superuser.
    pub fn tcp_url(&self, dbname: &str) -> String {
        format!("postgres://postgres@{}:5432/{dbname}", self.address)
    }
}

impl Drop for TcpCluster {
    fn drop(&mut self) {
        if let Some(pg) = self.pg.take() {
            let _ = pg.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn append(path: &std::path::Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    file.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("append to {}: {e}", path.display()));
}
