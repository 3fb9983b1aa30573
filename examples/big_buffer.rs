//! A large buffer shared, not sent: the parent fills a 1 GiB `Array<f32>`,
//! a pool sums slices of it in parallel (each task carries the array's
//! handle and a range: a few dozen bytes), and the answer is checked against
//! a sequential sum. Beside it, the time to send the same bytes to a child
//! through a Unix pipe, which is what copying IPC costs.
//!
//! `cargo run --release --example big_buffer` (`BIG_BUFFER_MIB=256` for less)

use shmkit::{Array, Pool};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Sums `data[start..end]`.
fn sum_slice((data, start, end): (Array<f32>, u64, u64)) -> f64 {
    // SAFETY: the parent finished writing before the pool started reading,
    // and nobody writes while the pool reads.
    let all = unsafe { data.as_slice_unchecked() };
    all[start as usize..end as usize]
        .iter()
        .map(|&x| x as f64)
        .sum()
}

/// The pipe's far end: sums the f32s arriving on stdin.
fn sum_stdin() {
    let mut input = std::io::stdin().lock();
    let mut buf = vec![0u8; 1 << 20];
    let (mut sum, mut carry) = (0f64, Vec::new());
    loop {
        let n = input.read(&mut buf).expect("read stdin");
        if n == 0 {
            break;
        }
        carry.extend_from_slice(&buf[..n]);
        let whole = carry.len() / 4 * 4;
        sum += carry[..whole]
            .chunks_exact(4)
            .map(|b| f32::from_ne_bytes(b.try_into().unwrap()) as f64)
            .sum::<f64>();
        carry.drain(..whole);
    }
    println!("{sum}");
}

fn main() -> shmkit::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("--sum-stdin") {
        sum_stdin();
        return Ok(());
    }
    let mib: usize = std::env::var("BIG_BUFFER_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let n = mib << 18; // f32s
    let t = Instant::now();
    let data = Array::<f32>::builder().random_name().create(n)?;
    // SAFETY: no other process has the array yet.
    let cells = unsafe { data.as_mut_slice_unchecked() };
    for (i, x) in cells.iter_mut().enumerate() {
        *x = (i % 1000) as f32;
    }
    println!("filled a {mib} MiB Array<f32> in {:?}", t.elapsed());

    let t = Instant::now();
    let sequential: f64 = cells.iter().map(|&x| x as f64).sum();
    let seq_time = t.elapsed();
    println!("sequential sum in this process: {sequential} in {seq_time:?}");

    let pool = Pool::new()?;
    let parts = 4 * pool.processes() as u64;
    let step = (n as u64).div_ceil(parts);
    let tasks: Vec<_> = (0..parts)
        .map(|i| (data.clone(), i * step, ((i + 1) * step).min(n as u64)))
        .collect();
    let t = Instant::now();
    let total: f64 = pool.map(sum_slice, tasks)?.iter().sum();
    let pool_time = t.elapsed();
    assert_eq!(total, sequential, "the pool's sum differs");
    println!(
        "pool of {} workers over the shared array: {total} in {pool_time:?} \
         ({parts} tasks, each a handle and a range)",
        pool.processes()
    );
    drop(pool);

    let t = Instant::now();
    let mut child = Command::new(std::env::current_exe().expect("current_exe"))
        .arg("--sum-stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the pipe reader");
    {
        let mut pipe = child.stdin.take().expect("stdin");
        // SAFETY: f32 has no padding; viewing the floats as bytes is sound.
        let bytes = unsafe { std::slice::from_raw_parts(cells.as_ptr().cast::<u8>(), n * 4) };
        pipe.write_all(bytes).expect("write to the pipe");
    }
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read the child's sum");
    child.wait().expect("reap the pipe reader");
    let pipe_time = t.elapsed();
    let piped: f64 = out.trim().parse().expect("a number");
    assert_eq!(piped, sequential, "the pipe reader's sum differs");
    println!("one child summing the same bytes sent through a pipe: {piped} in {pipe_time:?}");
    println!(
        "shared: {:.1}x faster than the pipe ({:.1}x the sequential sum's speed)",
        pipe_time.as_secs_f64() / pool_time.as_secs_f64(),
        seq_time.as_secs_f64() / pool_time.as_secs_f64()
    );
    Ok(())
}
