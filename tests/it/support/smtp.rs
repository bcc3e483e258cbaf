//! A small SMTP server for tests, on 127.0.0.1: accepts every message, can answer 550 for
//! chosen recipients (quoting the address upper-cased, as a server may), and can be down
//! (nothing listening, so connections are refused) and come back on the same port.
#![allow(dead_code)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use usage_worker::config::{HumanDuration, MailSettings, MailTransportKind, SmtpTls};

/// One message as the server received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub rcpt: Vec<String>,
    pub data: String,
}

impl Received {
    /// The value of the first header `name` (unfolded).
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or("");
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(v) = value.as_mut() {
                if line.starts_with(' ') || line.starts_with('\t') {
                    v.push_str(line);
                    continue;
                }
                break;
            }
            if let Some((key, rest)) = line.split_once(':')
                && key.eq_ignore_ascii_case(name)
            {
                value = Some(rest.trim().to_string());
            }
        }
        value
    }

    pub fn message_id(&self) -> String {
        self.header("Message-ID").unwrap_or_default()
    }
}

#[derive(Default)]
struct State {
    received: Vec<Received>,
    reject: HashSet<String>,
    /// Mail transactions (MAIL FROM to the end of DATA) open now, and the most seen at once.
    in_flight: usize,
    max_in_flight: usize,
}

struct Running {
    stop: Arc<AtomicBool>,
    accept: JoinHandle<()>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
}

pub struct SmtpServer {
    port: u16,
    state: Arc<Mutex<State>>,
    running: Option<Running>,
}

impl SmtpServer {
    /// Starts on a free port of 127.0.0.1.
    pub fn start() -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind test SMTP server");
        let port = listener.local_addr().expect("local address").port();
        let mut server = SmtpServer {
            port,
            state: Arc::default(),
            running: None,
        };
        server.serve(listener);
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Answers `550` to `RCPT TO` for this address from now on, quoting it upper-cased.
    pub fn reject(&self, address: &str) {
        self.state
            .lock()
            .unwrap()
            .reject
            .insert(address.to_ascii_lowercase());
    }

    /// The most mail transactions that were open at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.state.lock().unwrap().max_in_flight
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// Everyone a message was delivered to, sorted.
    pub fn recipients(&self) -> Vec<String> {
        let mut recipients: Vec<String> = self
            .received()
            .iter()
            .flat_map(|m| m.rcpt.clone())
            .collect();
        recipients.sort();
        recipients
    }

    /// Points the mail settings at this server: plain SMTP on 127.0.0.1, from an
    /// `example.com` address (the domain of every Message-ID).
    pub fn configure(&self, mail: &mut MailSettings) {
        mail.transport = Some(MailTransportKind::Smtp);
        mail.smtp.host = "127.0.0.1".into();
        mail.smtp.port = Some(self.port);
        mail.smtp.tls = SmtpTls::None;
        mail.smtp.timeout = HumanDuration(Duration::from_secs(10));
        mail.from = "Example Usage <usage@example.com>".into();
    }

    /// Points the binary's environment at this server: plain SMTP on 127.0.0.1, a 5 s timeout.
    pub fn configure_env(&self, command: &mut Command) {
        command
            .env("USAGE_WORKER__MAIL__TRANSPORT", "smtp")
            .env("USAGE_WORKER__MAIL__FROM", "Usage <usage@example.com>")
            .env("USAGE_WORKER__MAIL__SMTP__HOST", "127.0.0.1")
            .env("USAGE_WORKER__MAIL__SMTP__PORT", self.port.to_string())
            .env("USAGE_WORKER__MAIL__SMTP__TLS", "none")
            .env("USAGE_WORKER__MAIL__SMTP__TIMEOUT", "5s");
    }

    /// Goes down: stops listening and drops every open connection.
    pub fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop.store(true, Ordering::SeqCst);
            let _ = running.accept.join();
            for conn in running.connections.lock().unwrap().drain(..) {
                let _ = conn.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    /// Comes back up on the same port.
    pub fn restart(&mut self) {
        if self.running.is_none() {
            let listener = TcpListener::bind(("127.0.0.1", self.port)).expect("bind again");
            self.serve(listener);
        }
    }

    fn serve(&mut self, listener: TcpListener) {
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let accept = {
            let stop = stop.clone();
            let connections = connections.clone();
            let state = self.state.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            stream.set_nonblocking(false).expect("blocking stream");
                            if let Ok(clone) = stream.try_clone() {
                                connections.lock().unwrap().push(clone);
                            }
                            let state = state.clone();
                            std::thread::spawn(move || {
                                let _ = session(stream, &state);
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        self.running = Some(Running {
            stop,
            accept,
            connections,
        });
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn angle_address(arg: &str) -> String {
    let start = arg.find('<').map_or(0, |i| i + 1);
    let end = arg[start..].find('>').map_or(arg.len(), |i| start + i);
    arg[start..end].to_string()
}

fn session(stream: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    let mut in_transaction = false;
    let result = transactions(stream, state, &mut in_transaction);
    if in_transaction {
        state.lock().unwrap().in_flight -= 1;
    }
    result
}

fn set_in_transaction(state: &Mutex<State>, flag: &mut bool, value: bool) {
    if *flag == value {
        return;
    }
    *flag = value;
    let mut state = state.lock().unwrap();
    if value {
        state.in_flight += 1;
        state.max_in_flight = state.max_in_flight.max(state.in_flight);
    } else {
        state.in_flight -= 1;
    }
}

fn transactions(
    stream: TcpStream,
    state: &Mutex<State>,
    in_transaction: &mut bool,
) -> std::io::Result<()> {
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    out.write_all(b"220 localhost test SMTP ready\r\n")?;
    let mut from = String::new();
    let mut rcpt: Vec<String> = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_string();
        let upper = command.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            out.write_all(b"250-localhost\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")?;
        } else if upper.starts_with("HELO") {
            out.write_all(b"250 localhost\r\n")?;
        } else if upper.starts_with("MAIL FROM:") {
            from = angle_address(&command[10..]);
            rcpt.clear();
            set_in_transaction(state, in_transaction, true);
            out.write_all(b"250 2.1.0 OK\r\n")?;
        } else if upper.starts_with("RCPT TO:") {
            let address = angle_address(&command[8..]);
            if state
                .lock()
                .unwrap()
                .reject
                .contains(&address.to_ascii_lowercase())
            {
                // As real servers do, the reply quotes the recipient, here in another case.
                let reply = format!(
                    "550 5.1.1 <{}>: mailbox unavailable\r\n",
                    address.to_ascii_uppercase()
                );
                out.write_all(reply.as_bytes())?;
            } else {
                rcpt.push(address);
                out.write_all(b"250 2.1.5 OK\r\n")?;
            }
        } else if upper == "DATA" {
            if rcpt.is_empty() {
                out.write_all(b"503 5.5.1 no valid recipients\r\n")?;
                continue;
            }
            out.write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n")?;
            let mut data = String::new();
            loop {
                let mut data_line = String::new();
                if reader.read_line(&mut data_line)? == 0 {
                    return Ok(());
                }
                if data_line == ".\r\n" {
                    break;
                }
                let unstuffed = data_line.strip_prefix('.').unwrap_or(&data_line);
                data.push_str(unstuffed);
            }
            state.lock().unwrap().received.push(Received {
                from: std::mem::take(&mut from),
                rcpt: std::mem::take(&mut rcpt),
                data,
            });
            set_in_transaction(state, in_transaction, false);
            out.write_all(b"250 2.0.0 queued\r\n")?;
        } else if upper == "RSET" {
            from.clear();
            rcpt.clear();
            set_in_transaction(state, in_transaction, false);
            out.write_all(b"250 2.0.0 OK\r\n")?;
        } else if upper == "NOOP" {
            out.write_all(b"250 2.0.0 OK\r\n")?;
        } else if upper == "QUIT" {
            out.write_all(b"221 2.0.0 bye\r\n")?;
            return Ok(());
        } else {
            out.write_all(b"502 5.5.2 command not recognised\r\n")?;
        }
    }
}
