//! The online store on Redis: one string key per entity, MGET for multi-gets, and rows plus the
//! materialiser offset written in one MULTI/EXEC transaction.

use kairos_types::{OnlineRow, TableId};
use redis::aio::MultiplexedConnection;

use crate::{KeyPart, KeyedRow, OnlineError, OnlineStore, Result, latest_per_key};

/// How many keys one MGET or DEL carries.
const CHUNK: usize = 1000;

/// The online store on a Redis server.
#[derive(Clone)]
pub struct RedisStore {
    conn: MultiplexedConnection,
    prefix: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl RedisStore {
    /// Connects to `url` (e.g. `redis://127.0.0.1:6379`). Every key starts with `prefix`, so
    /// several Kairos instances (or test runs) can share a server.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self> {
        let client = redis::Client::open(url)?;
        let conn = client.get_multiplexed_async_connection().await?;
        Ok(Self {
            conn,
            prefix: prefix.to_string(),
        })
    }

    pub async fn ping(&self) -> Result<()> {
        let mut conn = self.conn.clone();
        redis::cmd("PING").query_async::<()>(&mut conn).await?;
        Ok(())
    }

    fn table_prefix(&self, table: &TableId) -> String {
        format!("{}fg:{}:v{}:", self.prefix, table.name, table.version)
    }

    fn row_key(table_prefix: &str, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(table_prefix.len() + 2 + key.len());
        k.extend_from_slice(table_prefix.as_bytes());
        k.extend_from_slice(b"k:");
        k.extend_from_slice(key);
        k
    }

    async fn mget(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut conn = self.conn.clone();
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(CHUNK) {
            let values: Vec<Option<Vec<u8>>> =
                redis::cmd("MGET").arg(chunk).query_async(&mut conn).await?;
            out.extend(values);
        }
        Ok(out)
    }

    /// The keys matching `pattern` that `keep` keeps (dropped batch by batch, never all held).
    async fn scan_keys(&self, pattern: &str, keep: impl Fn(&[u8]) -> bool) -> Result<Vec<Vec<u8>>> {
        let mut conn = self.conn.clone();
        let mut cursor: u64 = 0;
        let mut keys = Vec::new();
        loop {
            let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(CHUNK)
                .query_async(&mut conn)
                .await?;
            keys.extend(batch.into_iter().filter(|k| keep(k)));
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }
}

fn decode(bytes: Option<Vec<u8>>) -> Result<Option<OnlineRow>> {
    bytes
        .map(|b| OnlineRow::decode(&b).map_err(OnlineError::Corrupt))
        .transpose()
}

impl OnlineStore for RedisStore {
    async fn apply(&self, table: &TableId, rows: Vec<KeyedRow>, offset: u64) -> Result<()> {
        let prefix = self.table_prefix(table);
        let latest: Vec<KeyedRow> = latest_per_key(rows).into_iter().collect();
        let keys: Vec<Vec<u8>> = latest
            .iter()
            .map(|(k, _)| Self::row_key(&prefix, k))
            .collect();
        // One materialiser writes a table, so reading then writing cannot race another writer.
        let current = self.mget(&keys).await?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for ((key, (_, row)), current) in keys.iter().zip(&latest).zip(current) {
            let keep_current = match decode(current)? {
                Some(current) => !row.supersedes(&current),
                None => false,
            };
            if !keep_current {
                pipe.set(key, row.encode()).ignore();
            }
        }
        pipe.set(format!("{prefix}offset"), offset).ignore();
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    async fn get_many(&self, table: &TableId, keys: &[Vec<u8>]) -> Result<Vec<Option<OnlineRow>>> {
        let prefix = self.table_prefix(table);
        let keys: Vec<Vec<u8>> = keys.iter().map(|k| Self::row_key(&prefix, k)).collect();
        self.mget(&keys).await?.into_iter().map(decode).collect()
    }

    async fn offset(&self, table: &TableId) -> Result<Option<u64>> {
        let mut conn = self.conn.clone();
        let offset: Option<u64> = redis::cmd("GET")
            .arg(format!("{}offset", self.table_prefix(table)))
            .query_async(&mut conn)
            .await?;
        Ok(offset)
    }

    async fn scan(&self, table: &TableId, part: KeyPart) -> Result<Vec<KeyedRow>> {
        let prefix = self.table_prefix(table);
        let strip = prefix.len() + 2;
        let keys = self
            .scan_keys(&format!("{prefix}k:*"), |key| part.holds(&key[strip..]))
            .await?;
        let values = self.mget(&keys).await?;
        keys.into_iter()
            .zip(values)
            .filter_map(|(key, value)| value.map(|v| (key, v)))
            .map(|(key, value)| {
                let row = OnlineRow::decode(&value).map_err(OnlineError::Corrupt)?;
                Ok((key[strip..].to_vec(), row))
            })
            .collect()
    }

    async fn drop_table(&self, table: &TableId) -> Result<()> {
        let prefix = self.table_prefix(table);
        let mut keys = self.scan_keys(&format!("{prefix}k:*"), |_| true).await?;
        keys.push(format!("{prefix}offset").into_bytes());
        let mut conn = self.conn.clone();
        for chunk in keys.chunks(CHUNK) {
            redis::cmd("DEL")
                .arg(chunk)
                .query_async::<()>(&mut conn)
                .await?;
        }
        Ok(())
    }
}
