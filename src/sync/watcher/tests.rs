//! The waiter's unit tests (heap words stand in for shared mappings).

use super::*;
use std::sync::atomic::AtomicBool;
use std::task::Wake;

/// Registrations fired after a sleep that a change or a wake-up ended
/// (not the look timeout) and whose word had changed.
pub(super) static FIRED_BY_CHANGE: AtomicU64 = AtomicU64::new(0);

struct Flag(AtomicBool);
impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Heap words (a `Vec` keeps them alive) stand in for a shared mapping.
fn words() -> (Arc<Vec<AtomicU32>>, Watch) {
    let keep = Arc::new(vec![AtomicU32::new(0), AtomicU32::new(0)]);
    // SAFETY: both atomics live in the Vec the watch keeps.
    let watch = unsafe { Watch::new(keep.clone(), &keep[0], &keep[1]) };
    (keep, watch)
}

fn wait_for(flag: &Flag) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !flag.0.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "watchdog: never woken");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_changed_word_wakes_its_future_and_a_withdrawn_one_is_gone() {
    let (w, watch) = words();
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = Waker::from(flag.clone());
    let before = FIRED_BY_CHANGE.load(Ordering::SeqCst);
    let reg = register(&watch, 0, &waker).unwrap();
    assert_eq!(w[1].load(Ordering::SeqCst), 1, "counted among the sleepers");
    // Let the shard go back to sleep with this word among its own (the
    // registration's poke wakes it once); well before the look is due.
    std::thread::sleep(Duration::from_millis(10));
    // What a peer's wake_one does: change the word, then FUTEX_WAKE.
    w[0].fetch_add(1, Ordering::SeqCst);
    futex::wake(&w[0], 1);
    wait_for(&flag);
    assert!(
        FIRED_BY_CHANGE.load(Ordering::SeqCst) > before,
        "by the change, not a look"
    );
    assert_eq!(w[1].load(Ordering::SeqCst), 0, "no longer a sleeper");
    drop(reg);
    assert_eq!(w[1].load(Ordering::SeqCst), 0);

    // Withdrawn before any change: its count goes, nothing fires.
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let reg = register(&watch, 1, &Waker::from(flag.clone())).unwrap();
    assert_eq!(w[1].load(Ordering::SeqCst), 1);
    drop(reg);
    assert_eq!(w[1].load(Ordering::SeqCst), 0);
    assert!(!flag.0.load(Ordering::SeqCst));
}

#[test]
fn a_registration_whose_word_already_changed_fires_at_once() {
    let (w, watch) = words();
    w[0].store(5, Ordering::SeqCst);
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let _reg = register(&watch, 4, &Waker::from(flag.clone())).unwrap();
    wait_for(&flag);
}

#[test]
fn a_shard_left_without_registrations_ends() {
    let (w, watch) = words();
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let reg = register(&watch, 0, &Waker::from(flag.clone())).unwrap();
    let shard = Arc::downgrade(&reg.shard);
    w[0].store(1, Ordering::SeqCst);
    futex::wake(&w[0], 1);
    wait_for(&flag);
    drop(reg);
    // Ended after IDLE without registrations (later: other tests may
    // place theirs in the same shard meanwhile).
    let deadline = Instant::now() + Duration::from_secs(60);
    while shard.upgrade().is_some() {
        assert!(Instant::now() < deadline, "watchdog: the shard never ended");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn more_registrations_than_one_shard_holds_start_more_shards() {
    let (_w, watch) = words();
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = Waker::from(flag.clone());
    let regs: Vec<_> = (0..=PER_SHARD)
        .map(|_| register(&watch, 0, &waker).unwrap())
        .collect();
    let shards = SHARDS.lock().unwrap().1.len();
    for s in &SHARDS.lock().unwrap().1 {
        assert!(s.entries().len() <= PER_SHARD);
    }
    assert!(
        shards >= 2,
        "{shards} shards for {} registrations",
        regs.len()
    );
    drop(regs);
}

/// The state letter of thread `tid` of this process (`S`: asleep).
fn thread_state(tid: i32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    // After the parenthesised name: " S ...".
    stat[stat.rfind(')').unwrap() + 2..].chars().next().unwrap()
}

#[test]
fn a_woken_registration_dropped_unpolled_passes_the_wake_up_on() {
    let (w, watch) = words();
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let reg = register(&watch, 0, &Waker::from(flag.clone())).unwrap();
    std::thread::sleep(Duration::from_millis(10));
    // A peer's change and wake-up, taken by this process's waiter thread.
    w[0].store(1, Ordering::SeqCst);
    futex::wake(&w[0], 1);
    wait_for(&flag);
    // Another sleeper of the word (a blocked thread of another process),
    // asleep on the new value before the future is dropped unpolled.
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let sleeper = std::thread::spawn({
        let w = w.clone();
        move || {
            tid_tx.send(crate::sys::proc::tid()).unwrap();
            futex::wait(&w[0], 1, Some(Duration::from_secs(30)))
        }
    });
    let tid = tid_rx.recv().unwrap() as i32;
    let deadline = Instant::now() + Duration::from_secs(10);
    while thread_state(tid) != 'S' {
        assert!(
            Instant::now() < deadline,
            "watchdog: the sleeper never slept"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(reg);
    assert_eq!(
        sleeper.join().unwrap(),
        futex::WaitResult::Woken,
        "the wake-up was passed on, not lost until the sleeper's timeout"
    );
    // A registration its own poll withdraws (`spend`) passes nothing on.
    let reg = register(&watch, 1, &Waker::from(flag.clone())).unwrap();
    reg.spend();
    assert_eq!(w[1].load(Ordering::SeqCst), 0);
}
