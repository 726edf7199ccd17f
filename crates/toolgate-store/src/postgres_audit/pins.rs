//! Pinned tool definitions in PostgreSQL (cluster mode): one `tool_pins` table shared by
//! every replica and by `toolgate tools`, so a tool pinned, changed or approved through one
//! replica is seen the same way by all of them.
//!
//! A write and its admin events commit in one transaction on the chain [`TOOLS_CHAIN`],
//! under the audit table's write lock (see grants.rs). An observation that changes nothing —
//! the common case — only reads. No notifications are needed: a gateway settles a tool
//! from memory only while its definition equals the pin it read, and asks the table again
//! for anything else (a change, a flagged tool), so an approval counts on its next use.

use super::grants::append_admin_locked;
use super::{Conn, Failed, Link, PostgresAuditLog, Tables, NO_RUNTIME};
use crate::pins::{
    approved, observe_one, pin_from_columns, Observed, PinRefused, ServedTool, ToolPin, COLUMNS,
};
use crate::{AuditEntry, StoreError};
use std::time::Duration;
use tokio_postgres::Row;

/// The chain every pin's admin event is appended to.
pub const TOOLS_CHAIN: &str = "admin@tools";

fn pin_of(row: &Row) -> Result<ToolPin, Failed> {
    pin_from_columns(|i| row.try_get(i).map_err(Failed::from))
}

/// The pins of `server`'s `tools` (all of them for `None`), by tool name; `lock`: `FOR
/// UPDATE` (inside a transaction).
async fn pins_of(
    client: &tokio_postgres::Client,
    tables: &Tables,
    server: &str,
    tools: Option<&[String]>,
    lock: bool,
) -> Result<std::collections::HashMap<String, ToolPin>, Failed> {
    let sql = format!(
        "SELECT {COLUMNS} FROM {} WHERE server = $1 AND ($2::TEXT[] IS NULL OR tool = ANY($2)){}",
        tables.pins,
        if lock { " FOR UPDATE" } else { "" }
    );
    let tools: Option<Vec<String>> = tools.map(<[String]>::to_vec);
    let rows = client.query(&sql, &[&server, &tools]).await?;
    rows.iter()
        .map(|row| pin_of(row).map(|p| (p.tool.clone(), p)))
        .collect()
}

async fn save(
    client: &tokio_postgres::Client,
    tables: &Tables,
    pin: &ToolPin,
) -> Result<(), Failed> {
    let served = pin.served.as_ref();
    client
        .execute(
            &format!(
                "INSERT INTO {} ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (server, tool) DO UPDATE SET sha256 = excluded.sha256,
                   definition = excluded.definition, approved_at = excluded.approved_at,
                   approved_by = excluded.approved_by, served_sha256 = excluded.served_sha256,
                   served_definition = excluded.served_definition, served_at = excluded.served_at",
                tables.pins
            ),
            &[
                &pin.server,
                &pin.tool,
                &pin.sha256,
                &pin.definition,
                &pin.approved_at,
                &pin.approved_by,
                &served.map(|s| &s.sha256),
                &served.map(|s| &s.definition),
                &served.map(|s| &s.seen_at),
            ],
        )
        .await?;
    Ok(())
}

impl PostgresAuditLog {
    /// Every pin, of one server or of all, ordered by server and tool.
    pub async fn tool_pins(&self, server: Option<&str>) -> Result<Vec<ToolPin>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM {} WHERE $1::TEXT IS NULL OR server = $1 ORDER BY server, tool",
            self.shared.settings.tables.pins
        );
        let timeout = self.shared.settings.timeout;
        let mut reader = self.reader.lock().await;
        on_connection!(&mut reader, timeout, |conn| async {
            let rows = conn.client.query(&sql, &[&server]).await?;
            rows.iter().map(pin_of).collect::<Result<Vec<_>, Failed>>()
        })
        .map_err(|cause| self.shared.error("read the tool pins", &cause))
    }

    /// Like [`crate::EmbeddedStore::observe_tools`]: records that `server` now serves
    /// `served`; `event` makes the admin entries of what changed, committed with it.
    pub async fn observe_tools(
        &self,
        server: &str,
        served: &[ServedTool],
        ts: &str,
        event: &mut (dyn FnMut(&ToolPin, Observed) -> Vec<AuditEntry> + Send),
    ) -> Result<Vec<(ToolPin, Observed)>, StoreError> {
        let tables = &self.shared.settings.tables;
        let timeout = self.shared.settings.timeout;
        let names: Vec<String> = served.iter().map(|s| s.tool.clone()).collect();
        let mut reader = self.reader.lock().await;
        on_connection!(&mut reader, timeout, |conn| observe_in(
            conn,
            tables,
            server,
            &names,
            served,
            ts,
            &mut *event
        ))
        .map_err(|cause| {
            self.shared
                .error("record the served tool definitions", &cause)
        })
    }

    /// Like [`crate::EmbeddedStore::approve_tool`].
    pub async fn approve_tool(
        &self,
        server: &str,
        tool: &str,
        expected: Option<&str>,
        actor: &str,
        ts: &str,
        event: &(dyn Fn(&ToolPin, &ToolPin) -> AuditEntry + Sync),
    ) -> Result<Result<ToolPin, PinRefused>, StoreError> {
        let tables = &self.shared.settings.tables;
        let timeout = self.shared.settings.timeout;
        let names = [tool.to_owned()];
        let mut reader = self.reader.lock().await;
        on_connection!(&mut reader, timeout, |conn| async {
            let client = &conn.client;
            locked_transaction!(client, tables, async {
                let Some(before) = pins_of(client, tables, server, Some(&names), true)
                    .await?
                    .remove(tool)
                else {
                    let refused = PinRefused::Unknown {
                        server: server.to_owned(),
                        tool: tool.to_owned(),
                    };
                    return Ok::<_, Failed>((Err(refused), false));
                };
                let after = match approved(&before, expected, actor, ts) {
                    Ok(after) => after,
                    Err(refused) => return Ok((Err(refused), false)),
                };
                save(client, tables, &after).await?;
                append_admin_locked(client, tables, TOOLS_CHAIN, &[event(&before, &after)]).await?;
                Ok((Ok(after), true))
            })
        })
        .map_err(|cause| self.shared.error("approve a tool definition", &cause))
    }
}

/// The observation on `conn`: a read, and only when something must be written, a
/// transaction that reads again under the lock.
async fn observe_in(
    conn: &mut Conn,
    tables: &Tables,
    server: &str,
    names: &[String],
    served: &[ServedTool],
    ts: &str,
    event: &mut (dyn FnMut(&ToolPin, Observed) -> Vec<AuditEntry> + Send),
) -> Result<Vec<(ToolPin, Observed)>, Failed> {
    let client = &conn.client;
    let mut known = pins_of(client, tables, server, Some(names), false).await?;
    let settled: Option<Vec<(ToolPin, Observed)>> = served
        .iter()
        .map(
            |tool| match observe_one(server, known.remove(&tool.tool), tool, ts) {
                (pin, observed, false) => Some((pin, observed)),
                (_, _, true) => None,
            },
        )
        .collect();
    if let Some(settled) = settled {
        return Ok(settled);
    }
    locked_transaction!(client, tables, async {
        let mut known = pins_of(client, tables, server, Some(names), true).await?;
        let mut outcome = Vec::with_capacity(served.len());
        let mut events = Vec::new();
        for tool in served {
            let (pin, observed, write) = observe_one(server, known.remove(&tool.tool), tool, ts);
            if write {
                save(client, tables, &pin).await?;
                events.extend(event(&pin, observed));
            }
            outcome.push((pin, observed));
        }
        append_admin_locked(client, tables, TOOLS_CHAIN, &events).await?;
        Ok::<_, Failed>((outcome, true))
    })
}
