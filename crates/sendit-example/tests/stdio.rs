//! Spawns the `sendit-example` binary and speaks raw newline-delimited JSON-RPC to it.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

/// Reads one line from the child's stdout and parses it.
fn read_reply(reader: &mut impl BufRead) -> Value {
    let mut line = String::new();
    let n = reader.read_line(&mut line).expect("read stdout");
    assert!(n > 0, "server closed stdout early");
    assert!(line.ends_with('\n'), "reply is newline-terminated");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("reply {line:?} is not JSON: {e}"))
}

#[test]
fn speaks_mcp_over_stdio() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sendit-example"))
        .env("SENDIT_PAGE_SIZE", "5")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sendit-example");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));

    // Several messages written in one go, including a notification and a blank line.
    let script = [
        json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"it","version":"0"}}}).to_string(),
        json!({"jsonrpc":"2.0","method":"notifications/initialized"}).to_string(),
        String::new(),
        json!({"jsonrpc":"2.0","id":"two","method":"ping"}).to_string(),
        json!({"jsonrpc":"2.0","id":3,"method":"tools/list"}).to_string(),
    ]
    .join("\n")
        + "\n";
    stdin.write_all(script.as_bytes()).unwrap();
    stdin.flush().unwrap();

    let init = read_reply(&mut stdout);
    assert_eq!(init["id"], 1);
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18");
    assert_eq!(
        init["result"]["capabilities"]["tools"]["listChanged"],
        false
    );

    let ping = read_reply(&mut stdout);
    assert_eq!(ping, json!({"jsonrpc":"2.0","id":"two","result":{}}));

    // Walk all pages.
    let mut page = read_reply(&mut stdout);
    let mut names = Vec::new();
    let mut next_id = 4;
    loop {
        let tools = page["result"]["tools"].as_array().expect("tools array");
        assert!(tools.len() <= 5);
        names.extend(
            tools
                .iter()
                .map(|t| t["name"].as_str().unwrap().to_string()),
        );
        let Some(cursor) = page["result"].get("nextCursor").cloned() else {
            break;
        };
        let req =
            json!({"jsonrpc":"2.0","id":next_id,"method":"tools/list","params":{"cursor":cursor}});
        writeln!(stdin, "{req}").unwrap();
        page = read_reply(&mut stdout);
        assert_eq!(page["id"], next_id);
        next_id += 1;
    }
    assert_eq!(names.len(), 11);
    assert!(names.iter().any(|n| n == "create_payment"));

    // A successful call, a tool failure, an unknown tool, an unknown method, bad JSON.
    writeln!(
        stdin,
        "{}",
        json!({"jsonrpc":"2.0","id":20,"method":"tools/call","params":{"name":"send_message","arguments":{"to":"bob@example.com","body":"hello"}}})
    )
    .unwrap();
    let sent = read_reply(&mut stdout);
    assert_eq!(sent["result"]["isError"], false);
    assert_eq!(sent["result"]["content"][0]["type"], "text");
    assert_eq!(sent["result"]["structuredContent"]["status"], "sent");

    writeln!(
        stdin,
        "{}",
        json!({"jsonrpc":"2.0","id":21,"method":"tools/call","params":{"name":"get_message","arguments":{"id":"msg_404"}}})
    )
    .unwrap();
    let missing = read_reply(&mut stdout);
    assert_eq!(missing["result"]["isError"], true);

    writeln!(
        stdin,
        "{}",
        json!({"jsonrpc":"2.0","id":22,"method":"tools/call","params":{"name":"launch_rockets","arguments":{}}})
    )
    .unwrap();
    let unknown = read_reply(&mut stdout);
    assert_eq!(unknown["error"]["code"], -32602);
    assert_eq!(unknown["error"]["message"], "Unknown tool: launch_rockets");

    writeln!(
        stdin,
        "{}",
        json!({"jsonrpc":"2.0","id":23,"method":"prompts/list"})
    )
    .unwrap();
    assert_eq!(read_reply(&mut stdout)["error"]["code"], -32601);

    stdin
        .write_all(b"{\"jsonrpc\": \"2.0\", \"id\": \n")
        .unwrap();
    let parse = read_reply(&mut stdout);
    assert_eq!(parse["error"]["code"], -32700);
    assert_eq!(parse["id"], Value::Null);

    // Closing stdin ends the server cleanly, and nothing else was written to stdout.
    drop(stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert_eq!(rest, "", "unexpected extra output on stdout");
    let output = child.wait_with_output().expect("wait");
    assert!(output.status.success(), "exit status {:?}", output.status);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("sendit-example"),
        "logs go to stderr: {stderr}"
    );
}
