//! Keys made once and shared by every replica (like [`crate::EmbeddedStore::secret`]).

use super::{Conn, Failed, Link, PostgresAuditLog, NO_RUNTIME};
use crate::StoreError;
use std::time::Duration;

impl PostgresAuditLog {
    /// The 32-byte key named `name`: made at random by the first replica that asks, the same
    /// for every replica after.
    pub async fn secret(&self, name: &str) -> Result<[u8; 32], StoreError> {
        use rand::RngCore;
        let tables = &self.shared.settings.tables;
        let timeout: Duration = self.shared.settings.timeout;
        let mut fresh = vec![0u8; 32];
        rand::rng().fill_bytes(&mut fresh);
        let insert = format!(
            "INSERT INTO {} (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            tables.secrets
        );
        let select = format!("SELECT value FROM {} WHERE name = $1", tables.secrets);
        let mut reader = self.reader.lock().await;
        let reader: &mut Link = &mut reader;
        let value: Vec<u8> = on_connection!(reader, timeout, |conn| async {
            conn.client.execute(&insert, &[&name, &fresh]).await?;
            let row = conn.client.query_one(&select, &[&name]).await?;
            Ok::<_, Failed>(row.try_get::<_, Vec<u8>>(0)?)
        })
        .map_err(|cause| self.shared.error("read a key", &cause))?;
        value.try_into().map_err(|_| {
            self.shared
                .error("read a key", &format!("the key {name:?} is not 32 bytes"))
        })
    }
}
