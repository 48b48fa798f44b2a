//! Python functions run in worker processes: the [`PythonHost`] of a process that does not run
//! Python itself (a server, the CLI). A worker is `python3 -c <python_worker.py>`, fed Arrow IPC
//! over its stdin and answering over its stdout, so a function's crash or hang ends its worker,
//! never the engine: the call fails with the function's name and why, and the next call starts
//! a new worker. Workers start on first use, up to the configured number, and are reused.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use arrow::array::ArrayRef;
use arrow::datatypes::{Field, Schema};
use arrow::ipc::reader::StreamReader;
use arrow::record_batch::RecordBatch;
use kairos_types::export::encode_ipc;
use serde::{Deserialize, Serialize};

use crate::on_demand::{PythonHost, PythonUdf, UdfMode, UserFn};
use crate::{Result, TransformError};

/// The worker's program, shipped in the binary.
const WORKER: &str = include_str!("python_worker.py");

/// How Python functions run outside the engine's process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PythonWorkersConfig {
    /// The interpreter (it needs pyarrow, numpy for vectorised functions, and what the
    /// functions import).
    pub interpreter: String,
    /// Workers at most; each runs one call at a time.
    pub workers: usize,
    /// A call not answered within this long fails, and its worker is stopped.
    pub timeout_ms: u64,
}

impl Default for PythonWorkersConfig {
    fn default() -> Self {
        Self {
            interpreter: "python3".into(),
            workers: 2,
            timeout_ms: 10_000,
        }
    }
}

/// A pool of Python worker processes. Cheap to clone; clones share the workers.
#[derive(Debug, Clone)]
pub struct PythonWorkers {
    pool: Arc<Pool>,
}

#[derive(Debug)]
struct Pool {
    config: PythonWorkersConfig,
    state: Mutex<State>,
    freed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    idle: Vec<Worker>,
    /// Workers started and not yet ended, idle or busy.
    running: usize,
}

/// One answer: its JSON header and, when the call succeeded, its Arrow payload.
type Answer = std::io::Result<(serde_json::Value, Option<Vec<u8>>)>;

#[derive(Debug)]
struct Worker {
    child: Child,
    requests: ChildStdin,
    answers: Receiver<Answer>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn frame(from: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut length = [0u8; 4];
    from.read_exact(&mut length)?;
    let mut bytes = vec![0; u32::from_be_bytes(length) as usize];
    from.read_exact(&mut bytes)?;
    Ok(bytes)
}

impl Worker {
    fn start(interpreter: &str) -> std::io::Result<Worker> {
        let mut child = Command::new(interpreter)
            .arg("-c")
            .arg(WORKER)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let requests = child.stdin.take().expect("piped");
        let mut stdout = child.stdout.take().expect("piped");
        let (tx, answers) = mpsc::channel();
        // Answers are read on a thread of their own, so a caller can stop waiting for one.
        std::thread::Builder::new()
            .name("kairos-python-worker".into())
            .spawn(move || {
                loop {
                    let answer = frame(&mut stdout).and_then(|header| {
                        let header: serde_json::Value = serde_json::from_slice(&header)?;
                        let payload = match header["ok"].as_bool() {
                            Some(true) => Some(frame(&mut stdout)?),
                            _ => None,
                        };
                        Ok((header, payload))
                    });
                    let ended = answer.is_err();
                    if tx.send(answer).is_err() || ended {
                        return;
                    }
                }
            })?;
        Ok(Worker {
            child,
            requests,
            answers,
        })
    }

    fn send(&mut self, header: &[u8], payload: &[u8]) -> std::io::Result<()> {
        for part in [header, payload] {
            self.requests
                .write_all(&(part.len() as u32).to_be_bytes())?;
            self.requests.write_all(part)?;
        }
        self.requests.flush()
    }

    /// Why the worker is gone, once it is.
    fn exit(&mut self) -> String {
        let _ = self.child.kill();
        match self.child.wait() {
            Ok(status) => format!("the Python worker ended ({status})"),
            Err(e) => format!("the Python worker ended ({e})"),
        }
    }
}

impl PythonWorkers {
    pub fn new(config: PythonWorkersConfig) -> PythonWorkers {
        PythonWorkers {
            pool: Arc::new(Pool {
                config,
                state: Mutex::new(State::default()),
                freed: Condvar::new(),
            }),
        }
    }
}

impl Pool {
    /// An idle worker, a new one while fewer than the limit run, or else the next one freed.
    fn take(&self) -> std::result::Result<Worker, String> {
        let mut state = self.state.lock().expect("pool lock");
        loop {
            if let Some(worker) = state.idle.pop() {
                return Ok(worker);
            }
            if state.running < self.config.workers.max(1) {
                state.running += 1;
                drop(state);
                return Worker::start(&self.config.interpreter).map_err(|e| {
                    self.lost();
                    format!(
                        "cannot start the Python worker '{}': {e}",
                        self.config.interpreter
                    )
                });
            }
            state = self.freed.wait(state).expect("pool lock");
        }
    }

    fn give_back(&self, worker: Worker) {
        self.state.lock().expect("pool lock").idle.push(worker);
        self.freed.notify_one();
    }

    /// A worker ended: its place is free for a new one.
    fn lost(&self) {
        self.state.lock().expect("pool lock").running -= 1;
        self.freed.notify_one();
    }

    /// Runs one call of the function `header` describes over `columns`.
    fn call(&self, name: &str, header: &[u8], columns: &[ArrayRef]) -> Result<ArrayRef> {
        let failed =
            |why: String| TransformError::Value(format!("Python function '{name}': {why}"));
        let fields: Vec<Field> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| Field::new(format!("c{i}"), c.data_type().clone(), true))
            .collect();
        let input = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns.to_vec())
            .map_err(|e| failed(e.to_string()))?;
        let payload = encode_ipc(&input).map_err(|e| failed(e.to_string()))?;
        let mut worker = self.take().map_err(failed)?;
        if let Err(e) = worker.send(header, &payload) {
            let why = worker.exit();
            drop(worker);
            self.lost();
            return Err(failed(format!("{why} before it took the call ({e})")));
        }
        let timeout = Duration::from_millis(self.config.timeout_ms);
        let answer = match worker.answers.recv_timeout(timeout) {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) | Err(RecvTimeoutError::Disconnected) => {
                let why = worker.exit();
                drop(worker);
                self.lost();
                return Err(failed(format!("{why} while running it")));
            }
            Err(RecvTimeoutError::Timeout) => {
                drop(worker);
                self.lost();
                return Err(failed(format!(
                    "no answer within {} ms; its worker was stopped",
                    self.config.timeout_ms
                )));
            }
        };
        self.give_back(worker);
        match answer {
            (_, Some(payload)) => {
                let mut reader = StreamReader::try_new(std::io::Cursor::new(payload), None)
                    .map_err(|e| failed(e.to_string()))?;
                let batch = reader
                    .next()
                    .ok_or_else(|| failed("its worker answered no rows".into()))?
                    .map_err(|e| failed(e.to_string()))?;
                Ok(batch.column(0).clone())
            }
            (header, None) => Err(failed(
                header["error"]
                    .as_str()
                    .unwrap_or("its worker answered an error without a message")
                    .to_string(),
            )),
        }
    }
}

impl PythonHost for PythonWorkers {
    fn load(&self, name: &str, udf: &PythonUdf, _arity: usize) -> Result<Box<UserFn>> {
        let mode = match udf.mode {
            UdfMode::Vectorized => "vectorized",
            UdfMode::Row => "row",
        };
        let header = serde_json::to_vec(&serde_json::json!({
            "name": name,
            "source": udf.source,
            "sha256": udf.sha256,
            "mode": mode,
            "returns": udf.returns.to_string(),
        }))
        .map_err(|e| TransformError::Definition(e.to_string()))?;
        let pool = self.pool.clone();
        let name = name.to_string();
        Ok(Box::new(move |columns: &[ArrayRef]| {
            pool.call(&name, &header, columns)
        }))
    }
}
