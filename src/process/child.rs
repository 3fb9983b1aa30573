//! The child's side: how a spawned child finds and runs its function, and what
//! it sends back.
//!
//! A spawned child is the same executable, started with `SHMKIT_SPAWN` set and
//! its channel as stdin. [`CHILD_ENTRY`] runs before `main` (from
//! `.init_array`), sees both, runs the function and exits: `main` never runs.

use super::channel::{self, State};
use super::{ProcessInfo, set_identity};
use crate::codec::Message;
use crate::error::{Error, ProcessError, Result};
use crate::region::fnv1a;
use crate::region::handle;
use crate::sys::proc;
use rkyv::util::AlignedVec;
use std::any::Any;
use std::fs::File;
use std::io::Write;
use std::os::fd::RawFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

/// The environment variable that marks a spawned child (its value: the
/// parent's pid, for diagnostics).
pub(crate) const ENV: &str = "SHMKIT_SPAWN";

/// Exit code of a child whose function panicked (Python: an exception).
pub(crate) const EXIT_PANICKED: i32 = 1;
/// Exit code of a child that could not run its function.
pub(crate) const EXIT_FAILED: i32 = 2;

/// The start request a parent writes into the channel.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
pub(crate) struct Request {
    /// The parent's executable: (device, inode, size, mtime).
    pub exe: [u64; 4],
    /// Offsets from [`anchor`] of the trampoline and of the user's function.
    pub trampoline: i64,
    pub function: i64,
    /// Hash of the function's type name.
    pub signature: u64,
    pub parent: ProcessInfo,
    pub name: String,
    pub daemon: bool,
    /// Descriptors the child inherits for anonymous-region handles.
    pub fds: Vec<i32>,
    /// The encoded arguments.
    pub args: Vec<u8>,
}

/// Why a child could not run its function.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
pub(crate) struct Failure {
    pub function_not_found: bool,
    pub message: String,
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Error {
        if f.function_not_found {
            Error::Process(ProcessError::FunctionNotFound { reason: f.message })
        } else {
            Error::Encoding {
                what: "arguments in the child",
                reason: f.message,
            }
        }
    }
}

/// What the trampoline produced.
pub(crate) enum Outcome {
    Returned(AlignedVec),
    Failed(Failure),
}

/// Every trampoline has this type, whatever the function's.
pub(crate) type Trampoline = fn(usize, &[u8], u64) -> Outcome;

/// The point that function addresses are measured from: the same in parent
/// and child because both run the same executable image.
#[inline(never)]
pub(crate) fn anchor() {}

/// The offset of `addr` from [`anchor`].
pub(crate) fn offset_of_code(addr: usize) -> i64 {
    addr.wrapping_sub(anchor as fn() as usize) as i64
}

/// The signature hash of `fn(A) -> R`.
pub(crate) fn signature<A, R>() -> u64 {
    fnv1a(std::any::type_name::<fn(A) -> R>().as_bytes())
}

/// Decodes the arguments, calls `function` (a `fn(A) -> R`), encodes the
/// result. Panics propagate to the caller, which catches them.
pub(crate) fn trampoline<A: Message, R: Message>(
    function: usize,
    args: &[u8],
    signature_sent: u64,
) -> Outcome {
    if signature_sent != signature::<A, R>() {
        return Outcome::Failed(Failure {
            function_not_found: true,
            message: format!(
                "the signature differs: the trampoline found is for {}",
                std::any::type_name::<fn(A) -> R>()
            ),
        });
    }
    // SAFETY: the child checked that `function` lies in this executable's code
    // and that the parent computed it (and this trampoline's address) from a
    // `fn(A) -> R` of this same executable; the signature hash just matched.
    let f = unsafe { std::mem::transmute::<usize, fn(A) -> R>(function) };
    let args = A::decode(args);
    // Every handle owns a duplicate now; the inherited originals go.
    crate::region::handle::close_inherited_fds();
    let args = match args {
        Ok(a) => a,
        Err(e) => {
            return Outcome::Failed(Failure {
                function_not_found: false,
                message: e.to_string(),
            });
        }
    };
    match f(args).encode() {
        Ok(bytes) => Outcome::Returned(bytes),
        Err(e) => Outcome::Failed(Failure {
            function_not_found: false,
            message: format!("the return value: {e}"),
        }),
    }
}

/// Runs before `main` in every program linked with shmkit; does nothing unless
/// this process is a spawned child.
#[used]
#[unsafe(link_section = ".init_array")]
static CHILD_ENTRY: extern "C" fn() = child_entry;

extern "C" fn child_entry() {
    run_if_child();
}

/// Runs the spawned function if this process is a shmkit child, and exits;
/// returns at once otherwise.
///
/// shmkit calls this from a constructor before `main`, so programs need not.
/// Call it yourself as the first line of `main` only on a platform or link
/// setup where constructors in `.init_array` do not run; it is idempotent.
///
/// # Safety
///
/// No other thread may exist yet (it edits the environment, which other
/// threads may read): call it before anything starts threads, including an
/// async runtime's `main` attribute.
pub unsafe fn init() {
    run_if_child();
}

fn run_if_child() {
    if std::env::var_os(ENV).is_none() || !stdin_is_channel() {
        // Not a child; or a leaked variable in a program not started by us,
        // which must run its own `main`.
        return;
    }
    // SAFETY: this runs before `main`, or from `init`, whose contract is that
    // no other thread exists yet, so nothing reads the environment meanwhile.
    unsafe { std::env::remove_var(ENV) };
    let code = run_child();
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

/// Whether fd 0 is a shmkit process channel (a memfd by that name).
fn stdin_is_channel() -> bool {
    std::fs::read_link("/proc/self/fd/0")
        .map(|p| p.to_string_lossy().starts_with("/memfd:shmkit-process"))
        .unwrap_or(false)
}

/// Takes the channel off stdin (leaving `/dev/null` there) and runs the
/// request. Returns the exit code.
fn run_child() -> i32 {
    let Ok(fd) = crate::sys::fd::dup_cloexec(0) else {
        eprintln!("shmkit child: cannot take the channel off stdin");
        return EXIT_FAILED;
    };
    let channel = File::from(fd);
    if let Ok(null) = File::open("/dev/null") {
        use std::os::fd::AsRawFd;
        let _ = crate::sys::fd::dup2(null.as_raw_fd(), 0);
    }
    // Like Rust's own runtime (which has not run yet).
    proc::ignore_sigpipe();

    let request = match read_request(&channel) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shmkit child: unusable start request: {e}");
            return report(&channel, failed(false, e.to_string()));
        }
    };
    set_identity(request.name.clone(), Some(request.parent.clone()));
    if request.daemon && become_daemon(request.parent.pid).is_err() {
        return EXIT_FAILED;
    }
    let trampoline = match locate(&request) {
        Ok(t) => t,
        Err(message) => return report(&channel, failed(true, message)),
    };
    handle::set_inherited_fds(request.fds.iter().map(|&f| f as RawFd).collect());
    let function = resolve(request.function);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        trampoline(function, &request.args, request.signature)
    }));
    report(&channel, outcome)
}

fn failed(function_not_found: bool, message: String) -> std::thread::Result<Outcome> {
    Ok(Outcome::Failed(Failure {
        function_not_found,
        message,
    }))
}

fn read_request(channel: &File) -> Result<Request> {
    match channel::read(channel)? {
        Some((State::Request, bytes)) => Request::decode(&bytes),
        other => Err(Error::Process(ProcessError::ChannelCorrupted {
            what: format!("expected a start request, found {:?}", other.map(|o| o.0)),
        })),
    }
}

/// Makes this child die with its parent *process*: a thread of ours waits
/// on a pidfd of the parent (readable when the whole parent process has
/// ended) and then kills us. `PR_SET_PDEATHSIG` is not enough on its own:
/// it fires when the parent *thread* that started us exits, so a daemon
/// started from a short-lived thread died with that thread. It remains the
/// fallback where `pidfd_open` is missing (Linux < 5.3) or no thread can be
/// started. Either way the parent is checked after arming, so a parent that
/// died before is noticed.
pub(crate) fn become_daemon(parent: u32) -> std::io::Result<()> {
    let watching = proc::pidfd_open(parent).ok().and_then(|fd| {
        std::thread::Builder::new()
            .name("shmkit-parent-watch".into())
            .spawn(move || {
                loop {
                    match proc::poll_readable(&fd, Duration::from_secs(3600)) {
                        Ok(true) => break,
                        Ok(false) => continue,
                        // Cannot watch any more: fall back to the signal.
                        Err(_) => {
                            let _ = proc::set_parent_death_signal(proc::SIGKILL);
                            return;
                        }
                    }
                }
                // The parent process ended: so do we (as PDEATHSIG would).
                let _ = proc::kill(proc::pid(), proc::SIGKILL);
            })
            .ok()
    });
    if watching.is_none() {
        proc::set_parent_death_signal(proc::SIGKILL)?;
    }
    if proc::ppid() != parent {
        // The parent died before the watch (or the signal) was armed.
        proc::exit_now(EXIT_FAILED);
    }
    Ok(())
}

fn resolve(offset: i64) -> usize {
    (anchor as fn() as usize).wrapping_add(offset as usize)
}

/// Checks the request names code of this very executable and returns the
/// trampoline to call.
fn locate(request: &Request) -> std::result::Result<Trampoline, String> {
    let exe = proc::exe_identity().map_err(|e| format!("cannot stat /proc/self/exe: {e}"))?;
    if exe != request.exe {
        return Err(format!(
            "the child runs another executable than the parent (parent {:?}, child {:?})",
            request.exe, exe
        ));
    }
    let trampoline = resolve(request.trampoline);
    let function = resolve(request.function);
    for (what, addr) in [("trampoline", trampoline), ("function", function)] {
        match proc::is_code_of_exe(addr) {
            Ok(true) => {}
            Ok(false) => {
                return Err(format!(
                    "the {what} address {addr:#x} is not in this executable's code"
                ));
            }
            Err(e) => return Err(format!("cannot read /proc/self/maps: {e}")),
        }
    }
    // SAFETY: the address lies in this executable's code and was computed by
    // the parent, running the same file, from a `Trampoline`
    // (`trampoline::<A, R>`); the trampoline checks the signature before it
    // calls the function.
    Ok(unsafe { std::mem::transmute::<usize, Trampoline>(trampoline) })
}

/// Writes the outcome into the channel and returns the exit code.
pub(crate) fn report(channel: &File, outcome: std::thread::Result<Outcome>) -> i32 {
    let (state, payload, code) = match outcome {
        Ok(Outcome::Returned(bytes)) => (State::Returned, bytes.to_vec(), 0),
        Ok(Outcome::Failed(f)) => match f.encode() {
            Ok(b) => (State::Failed, b.to_vec(), EXIT_FAILED),
            Err(_) => (State::Failed, Vec::new(), EXIT_FAILED),
        },
        Err(panic) => (
            State::Panicked,
            panic_message(&*panic).into_bytes(),
            EXIT_PANICKED,
        ),
    };
    if let Err(e) = channel::write(channel, state, &payload) {
        eprintln!("shmkit child: cannot report to the parent: {e}");
        return EXIT_FAILED;
    }
    code
}

/// The message of a panic payload (`&str` or `String`, as `panic!` makes).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

/// Decodes a child's report after it was reaped with `exitcode`.
pub(crate) fn outcome<R: Message>(
    frame: Option<(State, Vec<u8>)>,
    pid: u32,
    name: &str,
    exitcode: i32,
) -> Result<R> {
    match frame {
        Some((State::Returned, bytes)) => R::decode(&bytes),
        Some((State::Panicked, msg)) => Err(Error::Process(ProcessError::Panicked {
            pid,
            name: name.to_owned(),
            message: String::from_utf8_lossy(&msg).into_owned(),
        })),
        Some((State::Failed, bytes)) => Err(Failure::decode(&bytes)
            .map(Error::from)
            .unwrap_or_else(|e| e)),
        _ => Err(Error::Process(ProcessError::Died {
            pid,
            name: name.to_owned(),
            exitcode,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn double(x: u64) -> u64 {
        x * 2
    }

    #[test]
    fn trampoline_checks_the_signature_and_decodes() {
        let t: Trampoline = trampoline::<u64, u64>;
        let args = 21u64.encode().unwrap();
        match t(
            double as fn(u64) -> u64 as usize,
            &args,
            signature::<u64, u64>(),
        ) {
            Outcome::Returned(b) => assert_eq!(u64::decode(&b).unwrap(), 42),
            Outcome::Failed(f) => panic!("{}", f.message),
        }
        match t(
            double as fn(u64) -> u64 as usize,
            &args,
            signature::<u32, u64>(),
        ) {
            Outcome::Failed(f) => assert!(f.function_not_found),
            Outcome::Returned(_) => panic!("signature mismatch accepted"),
        }
        match t(
            double as fn(u64) -> u64 as usize,
            b"\x01",
            signature::<u64, u64>(),
        ) {
            Outcome::Failed(f) => assert!(!f.function_not_found),
            Outcome::Returned(_) => panic!("bad arguments accepted"),
        }
    }

    fn request_for(function: usize) -> Request {
        let t: Trampoline = trampoline::<u64, u64>;
        Request {
            exe: proc::exe_identity().unwrap(),
            trampoline: offset_of_code(t as usize),
            function: offset_of_code(function),
            signature: signature::<u64, u64>(),
            parent: super::super::current_process(),
            name: "t".into(),
            daemon: false,
            fds: Vec::new(),
            args: Vec::new(),
        }
    }

    #[test]
    fn locate_refuses_another_executable_and_addresses_outside_its_code() {
        let f = double as fn(u64) -> u64 as usize;
        assert!(locate(&request_for(f)).is_ok());
        let mut other_exe = request_for(f);
        other_exe.exe[1] ^= 1;
        assert!(
            locate(&other_exe)
                .unwrap_err()
                .contains("another executable")
        );
        let heap = Box::new(0u8);
        let not_code = request_for(&*heap as *const u8 as usize);
        assert!(
            locate(&not_code)
                .unwrap_err()
                .contains("not in this executable's code")
        );
        // A request that went through the channel comes out identical.
        let bytes = request_for(f).encode().unwrap();
        let back = Request::decode(&bytes).unwrap();
        assert_eq!(back.function, offset_of_code(f));
        assert!(Request::decode(&bytes[..bytes.len() - 3]).is_err());
    }

    #[test]
    fn offsets_resolve_back_to_code_of_this_executable() {
        let addr = double as fn(u64) -> u64 as usize;
        assert_eq!(resolve(offset_of_code(addr)), addr);
        assert!(proc::is_code_of_exe(resolve(offset_of_code(addr))).unwrap());
        assert!(!proc::is_code_of_exe(resolve(i64::MIN / 2)).unwrap());
    }
}
