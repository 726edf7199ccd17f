//! The SendIt tool catalogue and the tools' implementations.
//!
//! Argument problems (a missing or mistyped argument, an unknown argument, a value out of
//! range) are reported as tool failures (`isError: true` results) so that a model can
//! correct itself, as the MCP specification recommends; only an unknown tool name or a
//! malformed `tools/call` request is a JSON-RPC error (see `server.rs`).

use std::sync::OnceLock;

use serde_json::{json, Map, Value};

use crate::store::Store;

/// Most rows `run_report` returns.
const MAX_REPORT_ROWS: usize = 100;
/// Largest single payment, in major currency units.
const MAX_PAYMENT: f64 = 1_000_000.0;

/// What a tool call produced.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolOutcome {
    /// The tool ran: a text block and, usually, the same data as `structuredContent`.
    Success {
        /// The text content block.
        text: String,
        /// The `structuredContent`, if any.
        structured: Option<Value>,
    },
    /// The tool ran and failed; the message becomes an `isError: true` result.
    Failure(String),
}

/// The tool definitions, in `tools/list` order.
pub fn catalogue() -> &'static [Value] {
    static CATALOGUE: OnceLock<Vec<Value>> = OnceLock::new();
    CATALOGUE.get_or_init(build_catalogue)
}

/// Builds the tool definitions.
fn build_catalogue() -> Vec<Value> {
    vec![
        // ---- read ----
        json!({
            "name": "list_contacts",
            "title": "List contacts",
            "description": "List every contact in the SendIt address book with its id, name and e-mail address. Read-only.",
            "inputSchema": { "type": "object", "properties": {}, "additionalProperties": false },
            "annotations": annotations(true, false, true, false),
        }),
        json!({
            "name": "get_message",
            "title": "Get a message",
            "description": "Fetch one sent message by its id (for example \"msg_4\"): recipient, body and time sent. Read-only.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "id": { "type": "string", "description": "The message id, as returned by send_message or search_messages.", "minLength": 1 }
                },
                "required": ["id"],
                "additionalProperties": false
            },
            "annotations": annotations(true, false, true, false),
        }),
        json!({
            "name": "search_messages",
            "title": "Search messages",
            "description": "Search sent messages for a case-insensitive substring of the body or the recipient address. An empty query matches every message. Read-only.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "query": { "type": "string", "description": "Text to look for in message bodies and recipients." },
                    "limit": { "type": "integer", "description": "Most messages to return (default 20).", "minimum": 1, "maximum": 100 }
                },
                "required": ["query"],
                "additionalProperties": false
            },
            "annotations": annotations(true, false, true, false),
        }),
        // ---- write ----
        json!({
            "name": "send_message",
            "title": "Send a message",
            "description": "Send a message to an e-mail address on behalf of the user. The message is delivered immediately and cannot be recalled.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "to": { "type": "string", "description": "Recipient e-mail address.", "format": "email" },
                    "body": { "type": "string", "description": "Message text.", "minLength": 1, "maxLength": 10000 }
                },
                "required": ["to", "body"],
                "additionalProperties": false
            },
            "annotations": annotations(false, false, false, true),
        }),
        json!({
            "name": "create_contact",
            "title": "Create a contact",
            "description": "Add a contact to the SendIt address book. Fails if a contact with the same e-mail address already exists.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "name": { "type": "string", "description": "Display name.", "minLength": 1, "maxLength": 200 },
                    "email": { "type": "string", "description": "E-mail address.", "format": "email" }
                },
                "required": ["name", "email"],
                "additionalProperties": false
            },
            "annotations": annotations(false, false, false, false),
        }),
        // ---- execute ----
        json!({
            "name": "run_report",
            "title": "Run a report query",
            "description": "Execute an SQL query against the SendIt reporting database and return the rows. Simulated: supports `SELECT <columns|*|COUNT(*)> FROM <contacts|messages|payments|jobs> [WHERE <column> = <value>] [LIMIT <n>]`; anything else is refused.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "query": { "type": "string", "description": "The SQL statement, e.g. SELECT name, email FROM contacts LIMIT 10.", "minLength": 1, "maxLength": 2000 }
                },
                "required": ["query"],
                "additionalProperties": false
            },
            "annotations": annotations(false, false, true, false),
        }),
        json!({
            "name": "schedule_job",
            "title": "Schedule a job",
            "description": "Schedule a shell command to be executed by the SendIt worker at a given time. Simulated: the job is recorded but never run.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "command": { "type": "string", "description": "The shell command line to run.", "minLength": 1 },
                    "at": { "type": "string", "description": "When to run it, as an RFC 3339 timestamp (e.g. 2030-01-01T09:00:00Z).", "format": "date-time" }
                },
                "required": ["command", "at"],
                "additionalProperties": false
            },
            "annotations": annotations(false, false, false, true),
        }),
        // ---- destructive ----
        json!({
            "name": "delete_contact",
            "title": "Delete a contact",
            "description": "Permanently delete a contact from the address book by id. This cannot be undone.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "id": { "type": "string", "description": "The contact id, as returned by list_contacts (e.g. \"ct_1\").", "minLength": 1 }
                },
                "required": ["id"],
                "additionalProperties": false
            },
            "annotations": annotations(false, true, true, false),
        }),
        json!({
            "name": "purge_all_messages",
            "title": "Purge all messages",
            "description": "Permanently delete every sent message. This wipes the whole message history and cannot be undone.",
            "inputSchema": { "type": "object", "properties": {}, "additionalProperties": false },
            "annotations": annotations(false, true, true, false),
        }),
        // ---- financial ----
        json!({
            "name": "create_payment",
            "title": "Create a payment",
            "description": "Send money: charge the user's SendIt balance and pay the recipient. Payments settle immediately; use refund_payment to return money.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "amount": { "type": "number", "description": "Amount in major units of the currency (e.g. 12.50).", "exclusiveMinimum": 0, "maximum": MAX_PAYMENT },
                    "currency": { "type": "string", "description": "ISO 4217 currency code, e.g. USD or EUR.", "pattern": "^[A-Z]{3}$" },
                    "recipient": { "type": "string", "description": "Who to pay: an e-mail address or account id.", "minLength": 1 },
                    "reason": { "type": "string", "description": "What the payment is for (shown on statements).", "maxLength": 500 }
                },
                "required": ["amount", "currency", "recipient"],
                "additionalProperties": false
            },
            "annotations": annotations(false, false, false, true),
        }),
        json!({
            "name": "refund_payment",
            "title": "Refund a payment",
            "description": "Refund all or part of an earlier payment. Without an amount, whatever has not been refunded yet is refunded.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "payment_id": { "type": "string", "description": "The payment id returned by create_payment (e.g. \"pay_7\").", "minLength": 1 },
                    "amount": { "type": "number", "description": "How much to refund; at most what remains of the payment.", "exclusiveMinimum": 0 }
                },
                "required": ["payment_id"],
                "additionalProperties": false
            },
            "annotations": annotations(false, false, false, true),
        }),
    ]
}

/// The `annotations` object of a tool definition.
fn annotations(read_only: bool, destructive: bool, idempotent: bool, open_world: bool) -> Value {
    json!({
        "readOnlyHint": read_only,
        "destructiveHint": destructive,
        "idempotentHint": idempotent,
        "openWorldHint": open_world,
    })
}

/// Runs the named tool; `None` when there is no such tool.
pub fn call(store: &mut Store, name: &str, arguments: &Map<String, Value>) -> Option<ToolOutcome> {
    let definition = catalogue().iter().find(|t| t["name"] == name)?;
    let args = Args {
        map: arguments,
        schema: &definition["inputSchema"],
    };
    let result = args.check_known().and_then(|()| match name {
        "list_contacts" => list_contacts(store),
        "get_message" => get_message(store, &args),
        "search_messages" => search_messages(store, &args),
        "send_message" => send_message(store, &args),
        "create_contact" => create_contact(store, &args),
        "run_report" => run_report(store, &args),
        "schedule_job" => schedule_job(store, &args),
        "delete_contact" => delete_contact(store, &args),
        "purge_all_messages" => purge_all_messages(store),
        "create_payment" => create_payment(store, &args),
        "refund_payment" => refund_payment(store, &args),
        other => Err(format!("tool {other} is listed but not implemented")),
    });
    Some(match result {
        Ok(structured) => ToolOutcome::Success {
            text: structured.to_string(),
            structured: Some(structured),
        },
        Err(message) => ToolOutcome::Failure(message),
    })
}

/// A tool's arguments together with its input schema, for validation.
struct Args<'a> {
    /// The `arguments` object of the call.
    map: &'a Map<String, Value>,
    /// The tool's `inputSchema`.
    schema: &'a Value,
}

impl Args<'_> {
    /// Rejects arguments the schema does not declare.
    fn check_known(&self) -> Result<(), String> {
        let declared = self.schema["properties"].as_object();
        let mut unknown: Vec<&str> = self
            .map
            .keys()
            .filter(|k| !declared.is_some_and(|d| d.contains_key(k.as_str())))
            .map(String::as_str)
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        unknown.sort_unstable();
        Err(format!("unknown argument(s): {}", unknown.join(", ")))
    }

    /// A required string argument.
    fn string(&self, name: &str) -> Result<&str, String> {
        self.opt_string(name)?
            .ok_or_else(|| format!("missing required argument \"{name}\" (string)"))
    }

    /// An optional string argument.
    fn opt_string(&self, name: &str) -> Result<Option<&str>, String> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(format!(
                "argument \"{name}\" must be a string, got {}",
                type_name(other)
            )),
        }
    }

    /// A required number argument.
    fn number(&self, name: &str) -> Result<f64, String> {
        self.opt_number(name)?
            .ok_or_else(|| format!("missing required argument \"{name}\" (number)"))
    }

    /// An optional number argument.
    fn opt_number(&self, name: &str) -> Result<Option<f64>, String> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_f64()
                .filter(|f| f.is_finite())
                .map(Some)
                .ok_or_else(|| format!("argument \"{name}\" is not a finite number")),
            Some(other) => Err(format!(
                "argument \"{name}\" must be a number, got {}",
                type_name(other)
            )),
        }
    }

    /// An optional non-negative integer argument.
    fn opt_integer(&self, name: &str) -> Result<Option<u64>, String> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| format!("argument \"{name}\" must be a non-negative integer")),
            Some(other) => Err(format!(
                "argument \"{name}\" must be an integer, got {}",
                type_name(other)
            )),
        }
    }
}

/// The JSON type name of a value, for error messages.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Rounds to cents.
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A plausible e-mail address: one `@`, something on each side, a dot in the domain,
/// no whitespace.
fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(char::is_whitespace)
}

/// An RFC 3339 date-time: `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    /// The two-or-four digit number at `range`, if all digits.
    fn num(b: &[u8], from: usize, to: usize) -> Option<u32> {
        let part = b.get(from..to)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    }
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return false;
    }
    if b[13] != b':' || b[16] != b':' {
        return false;
    }
    let (Some(_), Some(month), Some(day), Some(hour), Some(min), Some(sec)) = (
        num(b, 0, 4),
        num(b, 5, 7),
        num(b, 8, 10),
        num(b, 11, 13),
        num(b, 14, 16),
        num(b, 17, 19),
    ) else {
        return false;
    };
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return false;
    }
    let mut rest = &b[19..];
    if rest.first() == Some(&b'.') {
        let digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[1 + digits..];
    }
    match rest {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', ..] if rest.len() == 6 && rest[3] == b':' => {
            matches!((num(rest, 1, 3), num(rest, 4, 6)), (Some(h), Some(m)) if h <= 23 && m <= 59)
        }
        _ => false,
    }
}

/// `list_contacts`.
fn list_contacts(store: &Store) -> Result<Value, String> {
    let contacts: Vec<Value> = store.contacts.iter().map(|c| c.to_json()).collect();
    Ok(json!({ "contacts": contacts }))
}

/// `get_message`.
fn get_message(store: &Store, args: &Args) -> Result<Value, String> {
    let id = args.string("id")?;
    store
        .messages
        .iter()
        .find(|m| m.id == id)
        .map(|m| m.to_json())
        .ok_or_else(|| format!("no message with id \"{id}\""))
}

/// `search_messages`.
fn search_messages(store: &Store, args: &Args) -> Result<Value, String> {
    let query = args.string("query")?.to_lowercase();
    let limit = args.opt_integer("limit")?.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err("argument \"limit\" must be between 1 and 100".into());
    }
    let hits: Vec<Value> = store
        .messages
        .iter()
        .filter(|m| m.body.to_lowercase().contains(&query) || m.to.to_lowercase().contains(&query))
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .map(|m| m.to_json())
        .collect();
    Ok(json!({ "messages": hits }))
}

/// `send_message`.
fn send_message(store: &mut Store, args: &Args) -> Result<Value, String> {
    let to = args.string("to")?;
    let body = args.string("body")?;
    if !is_email(to) {
        return Err(format!("\"{to}\" is not a valid e-mail address"));
    }
    if body.trim().is_empty() {
        return Err("the message body is empty".into());
    }
    let message = store.add_message(to, body);
    Ok(json!({ "id": message.id, "to": message.to, "status": "sent", "sent_at": message.sent_at }))
}

/// `create_contact`.
fn create_contact(store: &mut Store, args: &Args) -> Result<Value, String> {
    let name = args.string("name")?.trim();
    let email = args.string("email")?.trim();
    if name.is_empty() {
        return Err("the contact name is empty".into());
    }
    if !is_email(email) {
        return Err(format!("\"{email}\" is not a valid e-mail address"));
    }
    if let Some(existing) = store
        .contacts
        .iter()
        .find(|c| c.email.eq_ignore_ascii_case(email))
    {
        return Err(format!(
            "a contact with e-mail {email} already exists ({})",
            existing.id
        ));
    }
    Ok(store.add_contact(name, email).to_json())
}

/// The columns of each `run_report` table.
fn table_columns(table: &str) -> Option<&'static [&'static str]> {
    match table {
        "contacts" => Some(&["id", "name", "email"]),
        "messages" => Some(&["id", "to", "body", "sent_at"]),
        "payments" => Some(&[
            "payment_id",
            "amount",
            "currency",
            "recipient",
            "reason",
            "refunded_total",
            "status",
            "created_at",
        ]),
        "jobs" => Some(&["job_id", "command", "at", "status"]),
        _ => None,
    }
}

/// The rows of a `run_report` table.
fn table_rows(store: &Store, table: &str) -> Vec<Value> {
    match table {
        "contacts" => store.contacts.iter().map(|c| c.to_json()).collect(),
        "messages" => store.messages.iter().map(|m| m.to_json()).collect(),
        "payments" => store.payments.iter().map(|p| p.to_json()).collect(),
        "jobs" => store.jobs.iter().map(|j| j.to_json()).collect(),
        _ => Vec::new(),
    }
}

/// Whether a row's cell equals a literal from a `WHERE` clause (`'text'` or a number).
fn cell_matches(cell: &Value, literal: &str) -> bool {
    if let Some(text) = literal
        .strip_prefix('\'')
        .and_then(|l| l.strip_suffix('\''))
    {
        return cell.as_str() == Some(text);
    }
    match (cell.as_f64(), literal.parse::<f64>()) {
        (Some(a), Ok(b)) => (a - b).abs() < 1e-9,
        _ => cell.as_str() == Some(literal),
    }
}

/// `run_report`: a tiny, simulated SQL engine over the store.
fn run_report(store: &Store, args: &Args) -> Result<Value, String> {
    let query = args.string("query")?;
    let sql = query.trim().trim_end_matches(';').trim();
    let lower = sql.to_ascii_lowercase();
    if !lower.starts_with("select ") {
        let verb = lower.split_whitespace().next().unwrap_or("");
        return Err(format!(
            "run_report only runs SELECT statements (got \"{verb}\"); the reporting database is read-only"
        ));
    }
    let from = lower
        .find(" from ")
        .ok_or("expected SELECT <columns> FROM <table>")?;
    let select_list = sql["select ".len()..from].trim();
    let rest = &sql[from + " from ".len()..];
    let rest_lower = rest.to_ascii_lowercase();

    // Split off LIMIT, then WHERE.
    let (body, limit) = match rest_lower.rfind(" limit ") {
        Some(at) => {
            let n = rest[at + " limit ".len()..]
                .trim()
                .parse::<usize>()
                .map_err(|_| "LIMIT takes a non-negative integer".to_string())?;
            (&rest[..at], Some(n))
        }
        None => (rest, None),
    };
    let body_lower = body.to_ascii_lowercase();
    let (table, filter) = match body_lower.find(" where ") {
        Some(at) => (body[..at].trim(), Some(body[at + " where ".len()..].trim())),
        None => (body.trim(), None),
    };
    let table = table.to_ascii_lowercase();
    let columns = table_columns(&table).ok_or_else(|| {
        format!("unknown table \"{table}\"; tables: contacts, messages, payments, jobs")
    })?;

    let mut rows = table_rows(store, &table);
    if let Some(filter) = filter {
        let (column, literal) = filter
            .split_once('=')
            .ok_or("only WHERE <column> = <value> is supported")?;
        let column = column.trim().to_ascii_lowercase();
        if !columns.contains(&column.as_str()) {
            return Err(format!("unknown column \"{column}\" in table {table}"));
        }
        let literal = literal.trim();
        rows.retain(|row| cell_matches(&row[column.as_str()], literal));
    }

    if select_list.eq_ignore_ascii_case("count(*)") {
        return Ok(json!({
            "table": table,
            "columns": ["count"],
            "rows": [{ "count": rows.len() }],
            "row_count": 1,
            "simulated": true,
        }));
    }
    let selected: Vec<String> = if select_list == "*" {
        columns.iter().map(|c| (*c).to_string()).collect()
    } else {
        let mut picked = Vec::new();
        for column in select_list.split(',') {
            let column = column.trim().to_ascii_lowercase();
            if !columns.contains(&column.as_str()) {
                return Err(format!(
                    "unknown column \"{column}\" in table {table}; columns: {}",
                    columns.join(", ")
                ));
            }
            picked.push(column);
        }
        picked
    };
    let cap = limit.unwrap_or(MAX_REPORT_ROWS).min(MAX_REPORT_ROWS);
    let rows: Vec<Value> = rows
        .into_iter()
        .take(cap)
        .map(|row| {
            let mut out = Map::new();
            for column in &selected {
                out.insert(column.clone(), row[column.as_str()].clone());
            }
            Value::Object(out)
        })
        .collect();
    Ok(json!({
        "table": table,
        "columns": selected,
        "row_count": rows.len(),
        "rows": rows,
        "simulated": true,
    }))
}

/// `schedule_job`.
fn schedule_job(store: &mut Store, args: &Args) -> Result<Value, String> {
    let command = args.string("command")?;
    let at = args.string("at")?;
    if command.trim().is_empty() {
        return Err("the command is empty".into());
    }
    if !is_rfc3339(at) {
        return Err(format!(
            "\"{at}\" is not an RFC 3339 timestamp (e.g. 2030-01-01T09:00:00Z)"
        ));
    }
    Ok(store.add_job(command, at).to_json())
}

/// `delete_contact`.
fn delete_contact(store: &mut Store, args: &Args) -> Result<Value, String> {
    let id = args.string("id")?;
    let contact = store
        .remove_contact(id)
        .ok_or_else(|| format!("no contact with id \"{id}\""))?;
    Ok(json!({ "deleted": contact.to_json() }))
}

/// `purge_all_messages`.
fn purge_all_messages(store: &mut Store) -> Result<Value, String> {
    let purged = store.messages.len();
    store.messages.clear();
    Ok(json!({ "purged": purged }))
}

/// `create_payment`.
fn create_payment(store: &mut Store, args: &Args) -> Result<Value, String> {
    let amount = args.number("amount")?;
    let currency = args.string("currency")?;
    let recipient = args.string("recipient")?.trim();
    let reason = args.opt_string("reason")?;
    if amount <= 0.0 {
        return Err("the amount must be greater than 0".into());
    }
    if amount > MAX_PAYMENT {
        return Err(format!("the amount exceeds the maximum of {MAX_PAYMENT}"));
    }
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "\"{currency}\" is not an ISO 4217 currency code (three capital letters)"
        ));
    }
    if recipient.is_empty() {
        return Err("the recipient is empty".into());
    }
    Ok(store
        .add_payment(round2(amount), currency, recipient, reason)
        .to_json())
}

/// `refund_payment`.
fn refund_payment(store: &mut Store, args: &Args) -> Result<Value, String> {
    let id = args.string("payment_id")?;
    let amount = args.opt_number("amount")?;
    let payment = store
        .payments
        .iter_mut()
        .find(|p| p.id == id)
        .ok_or_else(|| format!("no payment with id \"{id}\""))?;
    let remaining = round2(payment.amount - payment.refunded);
    if remaining <= 0.0 {
        return Err(format!("payment {id} is already fully refunded"));
    }
    let amount = round2(amount.unwrap_or(remaining));
    if amount <= 0.0 {
        return Err("the refund amount must be greater than 0".into());
    }
    if amount > remaining + 1e-9 {
        return Err(format!(
            "cannot refund {amount} {}: only {remaining} remains refundable on {id}",
            payment.currency
        ));
    }
    payment.refunded = round2(payment.refunded + amount);
    let mut out = payment.to_json();
    if let Some(obj) = out.as_object_mut() {
        obj.insert("refund_amount".into(), json!(amount));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a tool against a store and returns the outcome.
    fn run(store: &mut Store, name: &str, args: Value) -> ToolOutcome {
        let Value::Object(map) = args else {
            panic!("arguments must be an object")
        };
        call(store, name, &map).expect("tool exists")
    }

    /// The structured content of a success, or a panic.
    fn ok(outcome: ToolOutcome) -> Value {
        match outcome {
            ToolOutcome::Success { structured, .. } => structured.expect("structured content"),
            ToolOutcome::Failure(message) => panic!("tool failed: {message}"),
        }
    }

    /// The message of a failure, or a panic.
    fn failed(outcome: ToolOutcome) -> String {
        match outcome {
            ToolOutcome::Failure(message) => message,
            ToolOutcome::Success { text, .. } => panic!("tool succeeded: {text}"),
        }
    }

    #[test]
    fn catalogue_is_consistent() {
        let names: Vec<&str> = catalogue()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "duplicate tool names");
        for tool in catalogue() {
            let schema = &tool["inputSchema"];
            for required in schema["required"].as_array().into_iter().flatten() {
                assert!(
                    schema["properties"]
                        .get(required.as_str().unwrap())
                        .is_some(),
                    "{} requires an undeclared property",
                    tool["name"]
                );
            }
            let read_only = tool["annotations"]["readOnlyHint"].as_bool().unwrap();
            let destructive = tool["annotations"]["destructiveHint"].as_bool().unwrap();
            assert!(!(read_only && destructive));
        }
        let destructive: Vec<&str> = catalogue()
            .iter()
            .filter(|t| t["annotations"]["destructiveHint"] == true)
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(destructive, ["delete_contact", "purge_all_messages"]);
    }

    #[test]
    fn unknown_tool_is_none() {
        assert!(call(&mut Store::seeded(), "nope", &Map::new()).is_none());
    }

    #[test]
    fn argument_type_errors() {
        let mut store = Store::seeded();
        let msg = failed(run(&mut store, "get_message", json!({"id": 5})));
        assert!(msg.contains("must be a string"), "{msg}");
        let msg = failed(run(
            &mut store,
            "create_payment",
            json!({"amount": "10", "currency": "USD", "recipient": "x"}),
        ));
        assert!(msg.contains("must be a number"), "{msg}");
        let msg = failed(run(
            &mut store,
            "search_messages",
            json!({"query": "a", "limit": 0}),
        ));
        assert!(msg.contains("limit"), "{msg}");
    }

    #[test]
    fn create_contact_validates() {
        let mut store = Store::seeded();
        let made = ok(run(
            &mut store,
            "create_contact",
            json!({"name": "Dana", "email": "dana@example.com"}),
        ));
        assert_eq!(made["email"], "dana@example.com");
        let dup = failed(run(
            &mut store,
            "create_contact",
            json!({"name": "Dana 2", "email": "DANA@example.com"}),
        ));
        assert!(dup.contains("already exists"));
        failed(run(
            &mut store,
            "create_contact",
            json!({"name": "X", "email": "nope"}),
        ));
    }

    #[test]
    fn send_message_validates_address() {
        let mut store = Store::seeded();
        failed(run(
            &mut store,
            "send_message",
            json!({"to": "bob", "body": "hi"}),
        ));
        failed(run(
            &mut store,
            "send_message",
            json!({"to": "bob@example.com", "body": "  "}),
        ));
        let sent = ok(run(
            &mut store,
            "send_message",
            json!({"to": "bob@example.com", "body": "hi"}),
        ));
        assert_eq!(sent["status"], "sent");
    }

    #[test]
    fn report_queries() {
        let mut store = Store::seeded();
        let all = ok(run(
            &mut store,
            "run_report",
            json!({"query": "SELECT * FROM contacts"}),
        ));
        assert_eq!(all["row_count"], 3);
        assert_eq!(all["columns"], json!(["id", "name", "email"]));

        let count = ok(run(
            &mut store,
            "run_report",
            json!({"query": "select count(*) from messages;"}),
        ));
        assert_eq!(count["rows"][0]["count"], 3);

        let filtered = ok(run(
            &mut store,
            "run_report",
            json!({"query": "SELECT name FROM contacts WHERE email = 'bob@example.com'"}),
        ));
        assert_eq!(filtered["rows"], json!([{ "name": "Bob Builder" }]));

        let limited = ok(run(
            &mut store,
            "run_report",
            json!({"query": "SELECT id FROM messages LIMIT 2"}),
        ));
        assert_eq!(limited["row_count"], 2);

        let refused = failed(run(
            &mut store,
            "run_report",
            json!({"query": "DROP TABLE contacts"}),
        ));
        assert!(refused.contains("SELECT"), "{refused}");
        failed(run(
            &mut store,
            "run_report",
            json!({"query": "SELECT * FROM secrets"}),
        ));
        failed(run(
            &mut store,
            "run_report",
            json!({"query": "SELECT password FROM contacts"}),
        ));
        failed(run(
            &mut store,
            "run_report",
            json!({"query": "SELECT * FROM contacts LIMIT many"}),
        ));
    }

    #[test]
    fn schedule_job_checks_time() {
        let mut store = Store::seeded();
        let job = ok(run(
            &mut store,
            "schedule_job",
            json!({"command": "backup --all", "at": "2030-01-01T09:00:00Z"}),
        ));
        assert_eq!(job["status"], "scheduled");
        ok(run(
            &mut store,
            "schedule_job",
            json!({"command": "x", "at": "2030-01-01T09:00:00.250+02:00"}),
        ));
        failed(run(
            &mut store,
            "schedule_job",
            json!({"command": "x", "at": "tomorrow"}),
        ));
        failed(run(
            &mut store,
            "schedule_job",
            json!({"command": "x", "at": "2030-13-01T09:00:00Z"}),
        ));
    }

    #[test]
    fn payment_validation() {
        let mut store = Store::seeded();
        failed(run(
            &mut store,
            "create_payment",
            json!({"amount": 0, "currency": "USD", "recipient": "bob"}),
        ));
        failed(run(
            &mut store,
            "create_payment",
            json!({"amount": 5, "currency": "usd", "recipient": "bob"}),
        ));
        failed(run(
            &mut store,
            "create_payment",
            json!({"amount": 2_000_000, "currency": "USD", "recipient": "bob"}),
        ));
        let paid = ok(run(
            &mut store,
            "create_payment",
            json!({"amount": 10.005, "currency": "USD", "recipient": "bob"}),
        ));
        assert_eq!(paid["amount"], 10.01);
        assert_eq!(paid["reason"], Value::Null);
        failed(run(
            &mut store,
            "refund_payment",
            json!({"payment_id": "pay_999"}),
        ));
    }

    #[test]
    fn email_and_time_checks() {
        assert!(is_email("a@b.co"));
        assert!(!is_email("a@b"));
        assert!(!is_email("a b@c.d"));
        assert!(!is_email("@c.d"));
        assert!(is_rfc3339("2030-01-01T09:00:00Z"));
        assert!(is_rfc3339("2030-01-01t09:00:00-05:30"));
        assert!(!is_rfc3339("2030-01-01 09:00:00Z"));
        assert!(!is_rfc3339("2030-01-01T09:00:00"));
        assert!(!is_rfc3339("2030-01-01T09:00:00.Z"));
    }
}
