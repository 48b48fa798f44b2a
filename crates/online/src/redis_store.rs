//! The online store on Redis — one server, or a Redis Cluster: one string key per entity, MGET
//! for multi-gets, and rows plus the materialiser offset written in one MULTI/EXEC transaction.
//!
//! A transaction's keys must share a hash slot in a cluster, so there a table's keys are spread
//! over [`RedisStore::slots`] *slot groups*, each with a hash tag of its own
//! (`{<prefix>fg:<name>:v<version>:s<n>}k:<key>`) and an offset key beside its rows: a key's
//! group is a stable hash of the key. Each group keeps an offset per log partition beside its
//! rows. A materialiser step of a partition writes, per group, what that group lacks of it and
//! the step's end as the partition's offset, in one script run that first checks the offset is
//! still the one the step was planned from — so a second materialiser of the partition (a
//! stale owner) cannot write over its successor's rows. A partition's offset is the least of
//! its groups' (a crash between two groups' writes makes the restart apply the step again, and
//! each group takes only what it lacks). A multi-get is one MGET per group, sent together,
//! which the cluster client pipelines per node.
//!
//! One server keeps the layout it always had: one group, no hash tag.

use futures::future::try_join_all;
use kairos_types::{OnlineRow, TableId};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{
    MultipleNodeRoutingInfo, ResponsePolicy, Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr,
};
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::{KeyPart, KeyedRow, OnlineError, OnlineStore, Result, Step, latest_per_key};

/// Writes a slot group's share of a step if the partition's offset (`KEYS[1]`) is still
/// `ARGV[1]` (empty: none yet): `ARGV[2]` becomes the offset, and each further key takes the
/// value at its place in `ARGV[3..]`. Answers `ok`, or the offset it found instead.
const APPLY_IF_UNMOVED: &str = r"
local found = redis.call('GET', KEYS[1]) or ''
if found ~= ARGV[1] then return found end
for i = 2, #KEYS do redis.call('SET', KEYS[i], ARGV[i + 1]) end
redis.call('SET', KEYS[1], ARGV[2])
return 'ok'
";

/// How many keys one MGET or DEL carries.
const CHUNK: usize = 1000;

/// How long a cluster request may wait for its answer before it fails, naming the cluster.
const CLUSTER_RESPONSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A connection to one server or to a cluster; either pipelines concurrent requests.
#[derive(Clone)]
enum Connection {
    Server(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Server(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Server(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Server(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// The online store on a Redis server or cluster.
#[derive(Clone)]
pub struct RedisStore {
    conn: Connection,
    prefix: String,
    slots: u16,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("engine", &self.engine())
            .field("prefix", &self.prefix)
            .field("slots", &self.slots)
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
            conn: Connection::Server(conn),
            prefix: prefix.to_string(),
            slots: 1,
        })
    }

    /// Connects to the Redis Cluster that `nodes` (some of its nodes' URLs) belong to; each
    /// table's keys are spread over `slots` slot groups.
    pub async fn connect_cluster(nodes: &[String], prefix: &str, slots: u16) -> Result<Self> {
        let client = redis::cluster::ClusterClientBuilder::new(nodes.to_vec())
            .response_timeout(CLUSTER_RESPONSE_TIMEOUT)
            .connection_timeout(CLUSTER_RESPONSE_TIMEOUT)
            .build()?;
        let conn = client.get_async_connection().await?;
        let store = Self {
            conn: Connection::Cluster(conn),
            prefix: prefix.to_string(),
            slots: slots.max(1),
        };
        store.ping().await?;
        Ok(store)
    }

    /// `redis` or `redis-cluster`.
    pub fn engine(&self) -> &'static str {
        match self.conn {
            Connection::Server(_) => "redis",
            Connection::Cluster(_) => "redis-cluster",
        }
    }

    /// What every key of this store starts with (after a cluster's hash-tag brace).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The slot groups a table's keys are spread over.
    pub fn slots(&self) -> u16 {
        self.slots
    }

    /// Whether every node answers (each master of a cluster).
    pub async fn ping(&self) -> Result<()> {
        match &self.conn {
            Connection::Server(c) => {
                redis::cmd("PING").query_async::<()>(&mut c.clone()).await?;
            }
            Connection::Cluster(c) => {
                let all = RoutingInfo::MultiNode((
                    MultipleNodeRoutingInfo::AllMasters,
                    Some(ResponsePolicy::AllSucceeded),
                ));
                c.clone().route_command(redis::cmd("PING"), all).await?;
            }
        }
        Ok(())
    }

    /// What every key of one slot group of `table` starts with.
    fn group_prefix(&self, table: &TableId, group: u16) -> String {
        match self.conn {
            Connection::Server(_) => {
                format!("{}fg:{}:v{}:", self.prefix, table.name, table.version)
            }
            Connection::Cluster(_) => format!(
                "{{{}fg:{}:v{}:s{group}}}",
                self.prefix, table.name, table.version
            ),
        }
    }

    /// The slot group of an entity key: a stable hash, so every replica agrees.
    fn group_of(&self, key: &[u8]) -> u16 {
        (crc32fast::hash(key) % u32::from(self.slots)) as u16
    }

    /// A slot group's offset of log partition `partition`: `offset` for partition 0 (as
    /// before the log had partitions), `offset:<p>` for the others.
    fn offset_key(group_prefix: &str, partition: u32) -> String {
        if partition == 0 {
            format!("{group_prefix}offset")
        } else {
            format!("{group_prefix}offset:{partition}")
        }
    }

    fn row_key(group_prefix: &str, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(group_prefix.len() + 2 + key.len());
        k.extend_from_slice(group_prefix.as_bytes());
        k.extend_from_slice(b"k:");
        k.extend_from_slice(key);
        k
    }

    /// `keys` split by slot group: (group, positions in `keys`).
    fn by_group(&self, keys: &[Vec<u8>]) -> Vec<(u16, Vec<usize>)> {
        let mut groups: Vec<Vec<usize>> = vec![Vec::new(); usize::from(self.slots)];
        for (i, key) in keys.iter().enumerate() {
            groups[usize::from(self.group_of(key))].push(i);
        }
        groups
            .into_iter()
            .enumerate()
            .filter(|(_, members)| !members.is_empty())
            .map(|(g, members)| (g as u16, members))
            .collect()
    }

    /// MGET of keys that share a slot group.
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

    /// The keys of one slot group that start with `kind` (`k:` rows, `offset` offsets) and
    /// that `keep` keeps (dropped page by page, never all held). In a cluster the SCAN goes to
    /// the node that owns the group's slot.
    async fn scan_keys(
        &self,
        group_prefix: &str,
        kind: &str,
        keep: impl Fn(&[u8]) -> bool,
    ) -> Result<Vec<Vec<u8>>> {
        let pattern = format!("{}{kind}*", glob_escape(group_prefix));
        let mut cursor: u64 = 0;
        let mut keys = Vec::new();
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(CHUNK);
            let (next, batch): (u64, Vec<Vec<u8>>) = match &self.conn {
                Connection::Server(c) => scan.query_async(&mut c.clone()).await?,
                Connection::Cluster(c) => {
                    let owner = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                        Route::with_key(group_prefix, SlotAddr::Master),
                    ));
                    let value = c.clone().route_command(scan, owner).await?;
                    redis::from_redis_value(value).map_err(redis::RedisError::from)?
                }
            };
            keys.extend(batch.into_iter().filter(|k| keep(k)));
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }

    /// Applies what one slot group lacks of a step, and the step's end as the partition's
    /// offset, in one script run that refuses it if the offset moved since it was read.
    async fn apply_group(
        &self,
        table: &TableId,
        group_prefix: String,
        step: Step,
        rows: Vec<KeyedRow>,
    ) -> Result<()> {
        let offset_key = Self::offset_key(&group_prefix, step.partition);
        let Some(stored) = self.mget(&[offset_key.clone().into_bytes()]).await?.pop() else {
            return Err(OnlineError::Corrupt("MGET answered no value".into()));
        };
        let stored = stored
            .map(|bytes| {
                String::from_utf8_lossy(&bytes).parse::<u64>().map_err(|e| {
                    OnlineError::Corrupt(format!("offset {offset_key} is not a number: {e}"))
                })
            })
            .transpose()?;
        let Some(lacking) = step.lacking(table, stored)? else {
            return Ok(());
        };
        let lacked = rows.into_iter().filter(|(_, row)| row.offset >= lacking);
        let rows = latest_per_key(lacked.collect());
        let keys: Vec<Vec<u8>> = rows
            .iter()
            .map(|(k, _)| Self::row_key(&group_prefix, k))
            .collect();
        let current = self.mget(&keys).await?;
        let mut script = redis::cmd("EVAL");
        let mut written = Vec::new();
        for ((key, (_, row)), current) in keys.iter().zip(&rows).zip(current) {
            let keep_current = match decode(current)? {
                Some(current) => !row.supersedes(&current),
                None => false,
            };
            if !keep_current {
                written.push((key, row.encode()));
            }
        }
        script
            .arg(APPLY_IF_UNMOVED)
            .arg(1 + written.len())
            .arg(&offset_key)
            .arg(written.iter().map(|(key, _)| *key).collect::<Vec<_>>())
            .arg(stored.map(|o| o.to_string()).unwrap_or_default())
            .arg(step.through)
            .arg(written.iter().map(|(_, row)| row).collect::<Vec<_>>());
        let answer: String = script.query_async(&mut self.conn.clone()).await?;
        if answer == "ok" {
            return Ok(());
        }
        Err(OnlineError::Moved {
            table: table.to_string(),
            partition: step.partition,
            from: step.from,
            found: answer.parse().ok(),
        })
    }
}

/// `s` as a SCAN pattern that matches it literally (a hash tag's braces are no glob, but a
/// group name may hold `*`, `?`, `[` or `\`).
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn decode(bytes: Option<Vec<u8>>) -> Result<Option<OnlineRow>> {
    bytes
        .map(|b| OnlineRow::decode(&b).map_err(OnlineError::Corrupt))
        .transpose()
}

impl OnlineStore for RedisStore {
    async fn apply(&self, table: &TableId, step: Step, rows: Vec<KeyedRow>) -> Result<()> {
        let mut groups: Vec<Vec<KeyedRow>> = vec![Vec::new(); usize::from(self.slots)];
        for (key, row) in rows {
            groups[usize::from(self.group_of(&key))].push((key, row));
        }
        // Every group takes the offset, rows or not: the partition's offset is the least of
        // them.
        try_join_all(groups.into_iter().enumerate().map(|(g, rows)| {
            self.apply_group(table, self.group_prefix(table, g as u16), step, rows)
        }))
        .await?;
        Ok(())
    }

    async fn get_many(&self, table: &TableId, keys: &[Vec<u8>]) -> Result<Vec<Option<OnlineRow>>> {
        let groups = self.by_group(keys);
        let answers = try_join_all(groups.iter().map(|(g, members)| {
            let prefix = self.group_prefix(table, *g);
            let row_keys: Vec<Vec<u8>> = members
                .iter()
                .map(|&i| Self::row_key(&prefix, &keys[i]))
                .collect();
            async move { self.mget(&row_keys).await }
        }))
        .await?;
        let mut out = vec![None; keys.len()];
        for ((_, members), values) in groups.iter().zip(answers) {
            for (&i, value) in members.iter().zip(values) {
                out[i] = decode(value)?;
            }
        }
        Ok(out)
    }

    async fn offset(&self, table: &TableId, partition: u32) -> Result<Option<u64>> {
        let offsets = try_join_all((0..self.slots).map(|g| {
            let key = Self::offset_key(&self.group_prefix(table, g), partition);
            let mut conn = self.conn.clone();
            async move {
                redis::cmd("GET")
                    .arg(key)
                    .query_async::<Option<u64>>(&mut conn)
                    .await
            }
        }))
        .await?;
        // A group a crash left unwritten makes the table start over (applying is idempotent).
        Ok(offsets
            .into_iter()
            .collect::<Option<Vec<u64>>>()
            .and_then(|o| o.into_iter().min()))
    }

    async fn scan(&self, table: &TableId, part: KeyPart) -> Result<Vec<KeyedRow>> {
        let mut rows = Vec::new();
        for g in 0..self.slots {
            let prefix = self.group_prefix(table, g);
            let strip = prefix.len() + 2;
            let keys = self
                .scan_keys(&prefix, "k:", |key| part.holds(&key[strip..]))
                .await?;
            let values = self.mget(&keys).await?;
            for (key, value) in keys.into_iter().zip(values) {
                if let Some(value) = value {
                    let row = OnlineRow::decode(&value).map_err(OnlineError::Corrupt)?;
                    rows.push((key[strip..].to_vec(), row));
                }
            }
        }
        Ok(rows)
    }

    async fn drop_table(&self, table: &TableId) -> Result<()> {
        for g in 0..self.slots {
            let prefix = self.group_prefix(table, g);
            let mut keys = self.scan_keys(&prefix, "k:", |_| true).await?;
            keys.extend(self.scan_keys(&prefix, "offset", |_| true).await?);
            let mut conn = self.conn.clone();
            for chunk in keys.chunks(CHUNK) {
                redis::cmd("DEL")
                    .arg(chunk)
                    .query_async::<()>(&mut conn)
                    .await?;
            }
        }
        Ok(())
    }
}
