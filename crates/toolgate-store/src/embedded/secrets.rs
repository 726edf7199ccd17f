//! Keys the gateway makes once and keeps in the data directory, such as the one that signs
//! the state of an approval asked in-band in protocol 2026-07-28: the `toolgate` processes
//! sharing the directory, and a restarted gateway, use the same key.

use super::EmbeddedStore;
use crate::StoreError;
use rusqlite::{params, OptionalExtension};

impl EmbeddedStore {
    /// The 32-byte key named `name`, made at random the first time it is asked for.
    pub fn secret(&self, name: &str) -> Result<[u8; 32], StoreError> {
        use rand::RngCore;
        let mut fresh = [0u8; 32];
        rand::rng().fill_bytes(&mut fresh);
        let value: Option<Vec<u8>> = self.with("read a key", |conn| {
            conn.execute(
                "INSERT OR IGNORE INTO secrets (name, value) VALUES (?1, ?2)",
                params![name, fresh.as_slice()],
            )?;
            conn.query_row(
                "SELECT value FROM secrets WHERE name = ?1",
                params![name],
                |row| row.get(0),
            )
            .optional()
        })?;
        value
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| self.error("read a key", format!("the key {name:?} is not 32 bytes")))
    }
}

#[cfg(test)]
mod tests {
    use crate::EmbeddedStore;

    #[test]
    fn a_key_is_made_once_and_kept() {
        let dir = super::super::scratch("secrets");
        let store = EmbeddedStore::open(&dir).unwrap();
        let first = store.secret("approval-state").unwrap();
        assert_eq!(store.secret("approval-state").unwrap(), first);
        assert_ne!(store.secret("another").unwrap(), first);
        drop(store);
        let reopened = EmbeddedStore::open(&dir).unwrap();
        assert_eq!(reopened.secret("approval-state").unwrap(), first);
        drop(reopened);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
