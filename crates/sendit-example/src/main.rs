//! `sendit-example`: a small, hand-written MCP server over stdio.
//!
//! It plays "SendIt", an imaginary messaging and payments service whose state lives in
//! memory, and it is the demo upstream that toolgate's README puts behind the gateway.
//! Its tools deliberately span every risk class the gateway cares about: reads
//! (`list_contacts`, `get_message`, `search_messages`), writes (`send_message`,
//! `create_contact`), execution (`run_report`, `schedule_job`), destruction
//! (`delete_contact`, `purge_all_messages`) and money (`create_payment`,
//! `refund_payment`).
//!
//! Transport: newline-delimited JSON-RPC 2.0 on stdin/stdout, one message per line;
//! everything else (logs) goes to stderr.
//!
//! Environment:
//! - `SENDIT_PAGE_SIZE`: tools per `tools/list` page (default 50).
//! - `SENDIT_QUIET`: when set (to anything but `0`), no per-request log lines on stderr.
#![forbid(unsafe_code)]

mod server;
mod store;
mod tools;

use std::io::{self, BufRead, Write};

use server::{Config, Server};

fn main() {
    let config = Config::from_env();
    let quiet = std::env::var("SENDIT_QUIET").is_ok_and(|v| v != "0");
    eprintln!(
        "sendit-example {}: serving MCP on stdio ({} tools, page size {})",
        env!("CARGO_PKG_VERSION"),
        tools::catalogue().len(),
        config.page_size
    );
    let mut server = Server::new(config);

    let stdin = io::stdin();
    let stdout = io::stdout();
    let mut input = stdin.lock();
    let mut line = String::new();
    loop {
        line.clear();
        match input.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(err) => {
                eprintln!("sendit-example: cannot read stdin: {err}");
                std::process::exit(1);
            }
        }
        if line.trim().is_empty() {
            continue;
        }
        let reply = server.handle_line(&line);
        if !quiet {
            if let Some(summary) = server.last_summary() {
                eprintln!("sendit-example: {summary}");
            }
        }
        if let Some(reply) = reply {
            let mut out = stdout.lock();
            let written = out
                .write_all(reply.as_bytes())
                .and_then(|()| out.write_all(b"\n"))
                .and_then(|()| out.flush());
            if let Err(err) = written {
                // The client went away; nothing left to talk to.
                eprintln!("sendit-example: cannot write stdout: {err}");
                std::process::exit(0);
            }
        }
    }
    eprintln!("sendit-example: stdin closed, exiting");
}
