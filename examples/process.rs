//! The tutorial's "Simple multiprocessing pattern" and "Other operations"
//! sections, in Rust: start a function in a child process, check it is alive,
//! join it; then terminate, exit codes, return values, panics, daemons and the
//! CPU count.
//!
//! Python:
//! ```python
//! p = multiprocessing.Process(target=do_some_work, args=(val,))
//! p.start()
//! print("Start thread, process alive: {}".format(p.is_alive()))
//! p.join()
//! ```
//!
//! `cargo run --release --example process`. No setup line is needed in
//! `main`: the child runs `do_some_work` before `main` would start.

use shmkit::error::ProcessError;
use shmkit::process::{self, Builder};
use shmkit::{Error, Value};
use std::time::Duration;

fn do_some_work(val: String) {
    println!(
        "Doing some work in {} (pid {})",
        process::current_process().name,
        std::process::id()
    );
    std::thread::sleep(Duration::from_secs(1));
    println!("echo: {val}");
}

fn sleep_for(secs: u64) {
    std::thread::sleep(Duration::from_secs(secs));
}

fn square(x: u64) -> u64 {
    x * x
}

fn fail(why: String) -> u64 {
    panic!("{why}");
}

fn count_up((counter, n): (Value<u64>, u64)) -> u64 {
    for _ in 0..n {
        counter.fetch_add(1);
    }
    n
}

fn main() -> Result<(), Error> {
    println!("== Simple multiprocessing pattern ==");
    let p = process::spawn(do_some_work, "text".to_string())?;
    println!("Start process, process alive: {}", p.is_alive());
    p.join()?;
    println!("End process");

    println!("\n== Other operations ==");
    let p = process::spawn(sleep_for, 60)?;
    println!("{} (pid {}) alive: {}", p.name(), p.pid(), p.is_alive());
    p.terminate()?;
    let code = p.wait()?;
    println!(
        "after terminate(): alive: {}, exitcode: {code} (minus SIGTERM, as in Python)",
        p.is_alive()
    );
    println!(
        "cpu_count(): {} usable (affinity mask and cgroup quota); the machine has {}",
        shmkit::cpu_count(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    println!("\n== Return values and panics come back to join ==");
    println!(
        "square(12) in a child = {}",
        process::spawn(square, 12)?.join()?
    );
    match process::spawn(fail, "no such file".to_string())?.join() {
        Err(Error::Process(ProcessError::Panicked { name, message, .. })) => {
            println!("{name} panicked: {message:?}")
        }
        other => println!("unexpected: {other:?}"),
    }

    println!("\n== A shared Value passed to 4 children: re-opened there, not copied ==");
    let counter = Value::builder().random_name().create(0u64)?;
    let children: Vec<_> = (0..4)
        .map(|_| process::spawn(count_up, (counter.clone(), 10_000)))
        .collect::<Result<_, _>>()?;
    let sent: u64 = children
        .into_iter()
        .map(|c| c.join())
        .sum::<Result<u64, _>>()?;
    println!(
        "children counted {sent}; the shared counter reads {}",
        counter.load()
    );

    println!("\n== Fork (this main is single-threaded, so it is allowed) and daemons ==");
    let offset = 100;
    let p = Builder::new().fork(move || square(offset))?;
    println!("forked child returned {}", p.join()?);
    let d = Builder::new().daemon(true).spawn(sleep_for, 3600)?;
    println!(
        "daemon {} started; it would be killed if this process died. Killing it now.",
        d.pid()
    );
    d.kill()?;
    println!("daemon exitcode: {:?}", d.wait()?);
    Ok(())
}
