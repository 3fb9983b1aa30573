//! Starting and joining a process (benches/process.rs).

use crate::model::{Role::*, Table, row};

pub fn start_join() -> Table {
    Table {
        title: "Start and join a process".into(),
        what: "Start a child that does nothing, wait for it, get its exit status (and result where the \
               row says so).",
        rows: vec![
            row(
                "process/start-join/0-raw-fork-waitpid",
                "raw `fork` + `waitpid`",
                Limit,
            ),
            row(
                "process/start-join/2-shmkit-fork",
                "shmkit `Process` (fork), result carried back",
                Shmkit,
            ),
            row(
                "process/start-join/4-shmkit-spawn",
                "shmkit `Process` (spawn: re-exec, result carried back)",
                Context,
            ),
            row(
                "process/start-join/1-raw-fork-pipe-result",
                "raw `fork` with a result over a pipe",
                Rust,
            ),
            row(
                "process/start-join/3-raw-command-same-binary",
                "`std::process::Command` of the same binary",
                Rust,
            ),
            row(
                "python/process/start-join-fork",
                "Python `Process` (fork)",
                Python,
            ),
            row(
                "python/process/start-join-spawn",
                "Python `Process` (spawn)",
                Python,
            ),
        ],
        why_loses: "shmkit's fork path also creates the shared result region, registers the child with \
                    its reaper and decodes the returned value; a bare fork with a pipe does less.",
    }
}
