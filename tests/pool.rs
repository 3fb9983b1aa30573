//! The pool with real worker processes: results, order, laziness, panics,
//! killed workers, recycling, terminate.

mod common;

use common::watchdog;
use shmkit::pool::Progress;
use shmkit::{Error, Pool};
use std::sync::{Arc, Mutex};

fn start_process(_: ()) {
    println!("Start {}", shmkit::process::current_process().name);
}

fn do_work(data: u64) -> u64 {
    data * data
}

#[test]
fn the_tutorial_pool_squares_with_an_initializer() {
    let _w = watchdog("tutorial pool");
    let pool = Pool::builder()
        .processes(shmkit::cpu_count() * 2)
        .initializer(start_process, ())
        .build()
        .unwrap();
    let outputs = pool.map(do_work, 0..10).unwrap();
    pool.close();
    pool.join();
    assert_eq!(outputs, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
}
