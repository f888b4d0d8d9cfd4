//! The two load models. Closed (Locust's): N virtual users, each sending, waiting, sending again —
//! the server's slowness slows the offered load. Open: a constant arrival rate from a schedule, each
//! request's latency taken from its slot in the schedule, so a stalled server cannot hide its tail
//! (coordinated omission); the uncorrected latency, from the actual send, is kept beside it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::sync::{Semaphore, watch};

use super::failure::Failure;
pub use super::output::Progress;
use super::scenario::{self, DbUser, Next, Scenario, Sink, Target, VirtualUser};
use super::shape::Stages;
use super::signal::signalled;
pub use super::signal::{Interrupt, Signal};
use super::stats::{RequestOutcome, Stats};

/// How long requests in flight at the end may take to finish before they are abandoned.
pub const GRACE: Duration = Duration::from_secs(5);

/// A closed-model run.
#[derive(Debug, Clone)]
pub struct ClosedPlan {
    pub users: usize,
    /// Users started per second (`f64::INFINITY`: all at once).
    pub spawn_rate: f64,
    /// What HTTP users send (the database target runs THE search SQL).
    pub scenario: Option<Arc<Scenario>>,
    /// Overrides every kind's wait between tasks.
    pub wait: Option<Duration>,
    pub run_time: Duration,
    pub max_requests: u64,
    /// Users whose on_start ran beforehand (sweeps: the same users at every level); otherwise
    /// each user runs its own, recorded like Locust's.
    pub prepared: Option<Arc<Vec<Arc<VirtualUser>>>>,
    /// Distinguishes this run's e-mail addresses from earlier runs'.
    pub tag: String,
    /// The users over time (`--stages`): `users` is then their peak, started as the target rises
    /// and retired as it falls; `spawn_rate` is not used.
    pub stages: Option<Stages>,
}

/// An open-model run.
#[derive(Debug, Clone)]
pub struct OpenPlan {
    /// Requests per second (with `stages`, their peak).
    pub rate: f64,
    /// The rate over time (`--rate-stages`), instead of a constant `rate`.
    pub stages: Option<Stages>,
    /// The users whose tasks start at the arrival rate, in turn (HTTP; their on_start ran
    /// beforehand).
    pub users: Arc<Vec<Arc<VirtualUser>>>,
    /// Distinguishes this run's values (`{{run}}`) from earlier runs'.
    pub tag: String,
    pub max_in_flight: usize,
    pub run_time: Duration,
    pub max_requests: u64,
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Time,
    RequestBound,
    /// A signal ended it early; the results so far are reported and written all the same.
    Interrupted(Signal),
}

/// A finished run.
#[derive(Debug, Clone)]
pub struct Finished {
    pub stats: Stats,
    pub ending: Ending,
    /// Requests abandoned in flight after the grace period.
    pub abandoned: usize,
    /// Closed model: per user that met a 429, how many requests it had sent before its first
    /// (with a full bucket, exactly the bucket's capacity).
    pub first_429: std::collections::BTreeMap<u64, u64>,
}

struct Shared {
    stats: Mutex<Stats>,
    sent: AtomicU64,
    max_requests: u64,
    users: AtomicUsize,
    stop: watch::Sender<Option<Ending>>,
    first_429: Mutex<std::collections::BTreeMap<u64, u64>>,
}

impl Shared {
    fn new(max_requests: u64) -> Arc<Self> {
        Arc::new(Self {
            stats: Mutex::new(Stats::new()),
            sent: AtomicU64::new(0),
            max_requests,
            users: AtomicUsize::new(0),
            stop: watch::channel(None).0,
            first_429: Mutex::default(),
        })
    }

    fn record(&self, o: &RequestOutcome) {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).add(o);
    }

    /// Takes a request slot; `false` (and the run stops) once the request bound is reached.
    fn take_slot(&self) -> bool {
        if self.sent.fetch_add(1, Ordering::Relaxed) < self.max_requests {
            true
        } else {
            self.stop_with(Ending::RequestBound);
            false
        }
    }

    fn stop_with(&self, why: Ending) {
        self.stop.send_if_modified(|s| {
            if s.is_none() {
                *s = Some(why);
                true
            } else {
                false
            }
        });
    }

    fn stopped(&self) -> bool {
        self.stop.borrow().is_some()
    }
}

impl Sink for Shared {
    fn admit(&self) -> bool {
        !self.stopped() && self.take_slot()
    }
    fn record(&self, o: &RequestOutcome) {
        Shared::record(self, o);
    }
}

/// A closed-model user's requests: recorded, counted, and its first 429 noted.
struct UserSink<'a> {
    shared: &'a Shared,
    sent: std::sync::atomic::AtomicU64,
    first_429: Mutex<Option<u64>>,
}

impl Sink for UserSink<'_> {
    fn admit(&self) -> bool {
        self.shared.admit()
    }
    fn record(&self, o: &RequestOutcome) {
        self.shared.record(o);
        let before = self.sent.fetch_add(1, Ordering::Relaxed);
        if o.status == Some(429) {
            let mut first = self.first_429.lock().unwrap_or_else(|e| e.into_inner());
            first.get_or_insert(before);
        }
    }
}

/// Waits until the run is told to stop.
async fn stopped(mut rx: watch::Receiver<Option<Ending>>) {
    let _ = rx.wait_for(Option::is_some).await;
}

/// Every second: a history row and the progress line, until the run stops.
fn spawn_ticker(shared: Arc<Shared>, progress: Progress) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + Duration::from_secs(1),
            Duration::from_secs(1),
        );
        let rx = shared.stop.subscribe();
        let mut second = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopped(rx.clone()) => break,
            }
            second += 1;
            let users = shared.users.load(Ordering::Relaxed);
            let mut stats = shared.stats.lock().unwrap_or_else(|e| e.into_inner());
            stats.tick(users);
            progress.show(&stats, users, second);
        }
    })
}

/// Stops the run when a signal comes, recording which.
fn watch_interrupt(
    shared: &Arc<Shared>,
    interrupt: Option<Interrupt>,
) -> Option<tokio::task::JoinHandle<()>> {
    let rx = interrupt?;
    let shared = shared.clone();
    Some(tokio::spawn(async move {
        let signal = signalled(rx).await;
        shared.stop_with(Ending::Interrupted(signal));
    }))
}

/// Starts the clock of a run (now), its history ticker and its Ctrl-C watch; returns the start, the
/// deadline and the two tasks.
fn begin(
    shared: &Arc<Shared>,
    run_time: Duration,
    progress: &Progress,
    interrupt: Option<Interrupt>,
) -> (
    Instant,
    Instant,
    tokio::task::JoinHandle<()>,
    Option<tokio::task::JoinHandle<()>>,
) {
    let start = Instant::now();
    shared
        .stats
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .started = start;
    let ticker = spawn_ticker(shared.clone(), progress.clone());
    (
        start,
        start + run_time,
        ticker,
        watch_interrupt(shared, interrupt),
    )
}

/// Ends a run: stops it, gives requests in flight [`GRACE`] to finish, abandons the rest.
async fn finish(
    shared: Arc<Shared>,
    handles: Vec<tokio::task::JoinHandle<()>>,
    ticker: tokio::task::JoinHandle<()>,
    interrupt: Option<tokio::task::JoinHandle<()>>,
    progress: &Progress,
) -> Finished {
    shared.stop_with(Ending::Time);
    let grace_end = tokio::time::Instant::now() + GRACE;
    let mut abandoned = 0;
    for mut h in handles {
        tokio::select! {
            _ = &mut h => {}
            _ = tokio::time::sleep_until(grace_end) => {
                h.abort();
                abandoned += 1;
            }
        }
    }
    let _ = ticker.await;
    if let Some(i) = interrupt {
        i.abort();
    }
    progress.finish();
    let ending = shared.stop.borrow().unwrap_or(Ending::Time);
    let mut stats = shared
        .stats
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    stats.ended = Some(Instant::now());
    let first_429 =
        std::mem::take(&mut *shared.first_429.lock().unwrap_or_else(|e| e.into_inner()));
    Finished {
        stats,
        ending,
        abandoned,
        first_429,
    }
}

/// Runs the closed model.
pub async fn closed(
    target: &Target,
    plan: &ClosedPlan,
    progress: &Progress,
    interrupt: Option<Interrupt>,
) -> Result<Finished> {
    let shared = Shared::new(plan.max_requests);
    let (start, deadline, ticker, interrupt) = begin(&shared, plan.run_time, progress, interrupt);
    let mut handles = writers(target, &shared, start, deadline);
    if let Some(stages) = &plan.stages {
        handles.extend(shaped(target, plan, stages, &shared, start, deadline).await?);
        return Ok(finish(shared, handles, ticker, interrupt, progress).await);
    }
    for i in 0..plan.users {
        let at = if plan.spawn_rate.is_finite() {
            start + Duration::from_secs_f64(i as f64 / plan.spawn_rate)
        } else {
            start
        };
        if at >= deadline {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(at.into()) => {}
            _ = stopped(shared.stop.subscribe()) => break,
        }
        handles.push(spawn_user(
            target,
            plan,
            &shared,
            i,
            deadline,
            Arc::default(),
        )?);
    }
    tokio::select! {
        _ = tokio::time::sleep_until(deadline.into()) => {}
        _ = stopped(shared.stop.subscribe()) => {}
    }
    Ok(finish(shared, handles, ticker, interrupt, progress).await)
}

/// Starts closed-model user `i` (a database connection, or an HTTP user: one of the prepared, or a
/// new one of the scenario) until `deadline`, or until `retire` is set (after its task).
fn spawn_user(
    target: &Target,
    plan: &ClosedPlan,
    shared: &Arc<Shared>,
    i: usize,
    deadline: Instant,
    retire: Arc<AtomicBool>,
) -> Result<tokio::task::JoinHandle<()>> {
    let (shared, target) = (shared.clone(), target.clone());
    Ok(match &target {
        Target::Database { .. } => tokio::spawn(db_user_loop(
            shared,
            target,
            DbUser::new(i as u64),
            deadline,
            retire,
        )),
        Target::Http { .. } => {
            let user = match (&plan.prepared, &plan.scenario) {
                (Some(users), _) if !users.is_empty() => users[i % users.len()].clone(),
                (_, Some(scenario)) => Arc::new(VirtualUser::new(scenario.clone(), i as u64)),
                (_, None) => anyhow::bail!("an HTTP target needs a scenario"),
            };
            tokio::spawn(user_loop(
                shared,
                target,
                user,
                plan.wait,
                deadline,
                plan.tag.clone(),
                retire,
            ))
        }
    })
}

/// How often a shaped closed run matches its users to the target.
const SHAPE_TICK: Duration = Duration::from_millis(100);

/// The closed model shaped by `stages` until `deadline`: every [`SHAPE_TICK`], users are started
/// until as many run as the target (rounded) and, while more run, the newest are retired (each
/// after its current task, k6's graceful ramp-down). Returns every user's task.
async fn shaped(
    target: &Target,
    plan: &ClosedPlan,
    stages: &Stages,
    shared: &Arc<Shared>,
    start: Instant,
    deadline: Instant,
) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut handles = Vec::new();
    // The retire flags of the users still meant to run, oldest first.
    let mut running: Vec<Arc<AtomicBool>> = Vec::new();
    let mut next = 0usize;
    let mut tick = tokio::time::interval(SHAPE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped(shared.stop.subscribe()) => break,
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let want = stages.target_at(now - start).round() as usize;
        while running.len() < want {
            let retire = Arc::new(AtomicBool::new(false));
            handles.push(spawn_user(
                target,
                plan,
                shared,
                next,
                deadline,
                retire.clone(),
            )?);
            running.push(retire);
            next += 1;
        }
        while running.len() > want {
            if let Some(r) = running.pop() {
                r.store(true, Ordering::Relaxed);
            }
        }
    }
    Ok(handles)
}

async fn user_loop(
    shared: Arc<Shared>,
    target: Target,
    user: Arc<VirtualUser>,
    wait: Option<Duration>,
    deadline: Instant,
    tag: String,
    retire: Arc<AtomicBool>,
) {
    let Target::Http { client, .. } = &target else {
        return;
    };
    shared.users.fetch_add(1, Ordering::Relaxed);
    let stop = shared.stop.subscribe();
    // on_start; a failure is recorded and, unless the kind goes on without, tried again a second
    // later.
    while !user.ready()
        && !shared.stopped()
        && !retire.load(Ordering::Relaxed)
        && Instant::now() < deadline
    {
        if user.start(client, &tag, &*shared).await.is_err() && !user.ready() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stopped(stop.clone()) => break,
            }
        }
    }
    let sink = UserSink {
        shared: &shared,
        sent: Default::default(),
        first_429: Mutex::new(None),
    };
    let retired = || retire.load(Ordering::Relaxed);
    while user.ready() && !shared.stopped() && !retired() && Instant::now() < deadline {
        let started = Instant::now();
        match user.next() {
            Next::Sleep(d) => {
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = stopped(stop.clone()) => break,
                }
            }
            Next::Task(task) => {
                if !shared.take_slot() {
                    break;
                }
                user.run(task, client, &tag, started, &sink).await;
            }
        }
        let w = user.wait(started, wait);
        if !w.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(w) => {}
                _ = stopped(stop.clone()) => break,
            }
        }
    }
    if let Some(n) = *sink.first_429.lock().unwrap_or_else(|e| e.into_inner()) {
        shared
            .first_429
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(user.id)
            .or_insert(n);
    }
    shared.users.fetch_sub(1, Ordering::Relaxed);
}

/// A database user: its connection (a failure recorded and retried once a second), then THE
/// search SQL back to back.
async fn db_user_loop(
    shared: Arc<Shared>,
    target: Target,
    mut user: DbUser,
    deadline: Instant,
    retire: Arc<AtomicBool>,
) {
    let Target::Database {
        url,
        ef_search,
        writes,
        ..
    } = &target
    else {
        return;
    };
    shared.users.fetch_add(1, Ordering::Relaxed);
    let stop = shared.stop.subscribe();
    while !user.ready() && !shared.stopped() && Instant::now() < deadline {
        if let Err(e) = user.start(url, *ef_search, writes.is_some()).await {
            shared.record(&RequestOutcome::failed(
                "SQL",
                Arc::from("connect"),
                Instant::now(),
                Failure::NotReady(crate::one_line(&e)),
            ));
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stopped(stop.clone()) => break,
            }
        }
    }
    while user.ready()
        && !shared.stopped()
        && !retire.load(Ordering::Relaxed)
        && Instant::now() < deadline
        && shared.take_slot()
    {
        let o = user.step(&target, Instant::now()).await;
        shared.record(&o);
    }
    shared.users.fetch_sub(1, Ordering::Relaxed);
}

/// Runs the open model. The schedule is kept by a thread of its own (OS sleeps are precise to
/// tens of µs; the async timer's 1 ms granularity would be charged to every request).
pub async fn open(
    target: &Target,
    plan: &OpenPlan,
    progress: &Progress,
    interrupt: Option<Interrupt>,
) -> Result<Finished> {
    let shared = Shared::new(plan.max_requests);
    let pool = match target {
        Target::Database {
            url,
            ef_search,
            writes,
            ..
        } => Some(
            database_pool(
                url,
                *ef_search,
                plan.max_in_flight,
                writes.as_ref().map(|_| crate::db::writes::SEARCH_PATH),
            )
            .await?,
        ),
        Target::Http { .. } => None,
    };
    let (start, deadline, ticker, interrupt) = begin(&shared, plan.run_time, progress, interrupt);
    let write_handles = writers(target, &shared, start, deadline);
    let handle = tokio::runtime::Handle::current();
    let in_flight = Arc::new(Semaphore::new(plan.max_in_flight));
    let dispatcher = {
        let (shared, target, plan, in_flight) = (
            shared.clone(),
            target.clone(),
            plan.clone(),
            in_flight.clone(),
        );
        std::thread::Builder::new()
            .name("capbench-schedule".into())
            .spawn(move || {
                let interval = Duration::from_secs_f64(1.0 / plan.rate);
                let mut k: u64 = 0;
                loop {
                    // Request k's slot: every 1/rate, or where the shaped rate's integral reaches k.
                    let due = match &plan.stages {
                        Some(stages) => stages.arrival(k),
                        None => Some(interval.mul_f64(k as f64)),
                    };
                    let Some(intended) = due.map(|d| start + d) else {
                        break;
                    };
                    if intended >= deadline || shared.stopped() {
                        break;
                    }
                    if let Some(d) = intended.checked_duration_since(Instant::now()) {
                        std::thread::sleep(d);
                    }
                    // All slots busy: wait (the request is late, and its latency says so) — but
                    // not past the end of the run, even if the server never answers.
                    let Some(permit) = handle.block_on(async {
                        tokio::select! {
                            permit = in_flight.clone().acquire_owned() => permit.ok(),
                            _ = stopped(shared.stop.subscribe()) => None,
                        }
                    }) else {
                        break;
                    };
                    shared.users.store(
                        plan.max_in_flight - in_flight.available_permits(),
                        Ordering::Relaxed,
                    );
                    if shared.stopped() || !shared.take_slot() {
                        break;
                    }
                    let user = (!plan.users.is_empty())
                        .then(|| plan.users[(k % plan.users.len() as u64) as usize].clone());
                    let (shared, target, pool, tag) = (
                        shared.clone(),
                        target.clone(),
                        pool.clone(),
                        plan.tag.clone(),
                    );
                    handle.spawn(async move {
                        match (&pool, &target, user) {
                            (Some(pool), _, _) => {
                                let o = match pool.acquire().await {
                                    Ok(mut conn) => {
                                        scenario::send_sql(&target, k, intended, Some(&mut conn))
                                            .await
                                    }
                                    Err(e) => RequestOutcome::failed(
                                        "SQL",
                                        Arc::from(scenario::SQL_NAME),
                                        intended,
                                        Failure::Database(e.to_string()),
                                    ),
                                };
                                shared.record(&o);
                            }
                            (None, Target::Http { client, .. }, Some(user)) => {
                                // Sleeps are refused before an open run: every task sends.
                                if let Next::Task(task) = user.next() {
                                    user.run(task, client, &tag, intended, &*shared).await;
                                }
                            }
                            _ => {}
                        }
                        drop(permit);
                    });
                    k += 1;
                }
            })
            .context("starting the schedule thread")?
    };
    // Wait for the schedule's end (or a stop, or the schedule thread's own end: a panic), then
    // for requests in flight.
    let mut waiter = tokio::task::spawn_blocking(move || dispatcher.join());
    let end_of_run = {
        let stop = shared.stop.subscribe();
        async move {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline.into()) => {}
                _ = stopped(stop) => {}
            }
        }
    };
    tokio::pin!(end_of_run);
    let joined = tokio::select! {
        joined = &mut waiter => Some(joined),
        _ = &mut end_of_run => None,
    };
    let joined = match joined {
        Some(joined) => {
            // The last slot fell due before the deadline: the run still lasts its time.
            if matches!(joined, Ok(Ok(()))) {
                end_of_run.await;
            }
            joined
        }
        None => {
            shared.stop_with(Ending::Time);
            waiter.await
        }
    };
    shared.stop_with(Ending::Time);
    if let Err(why) = schedule_ended(joined) {
        ticker.abort();
        if let Some(i) = interrupt {
            i.abort();
        }
        return Err(why);
    }
    let all = u32::try_from(plan.max_in_flight).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(GRACE, in_flight.acquire_many(all))
        .await
        .is_ok();
    let abandoned = if drained {
        0
    } else {
        plan.max_in_flight - in_flight.available_permits()
    };
    let mut done = finish(shared, write_handles, ticker, interrupt, progress).await;
    done.abandoned += abandoned;
    Ok(done)
}

/// The database target's writers (`--write-rate`), started with the clock; none otherwise.
fn writers(
    target: &Target,
    shared: &Arc<Shared>,
    start: Instant,
    deadline: Instant,
) -> Vec<tokio::task::JoinHandle<()>> {
    match target.writes() {
        Some(plan) => super::ingest::spawn(
            plan,
            shared.clone(),
            start,
            deadline,
            shared.stop.subscribe(),
        ),
        None => Vec::new(),
    }
}

/// How the schedule thread ended: normally, or with a panic, which becomes the run's error (a
/// swallowed panic would pass for a run that sent nothing).
fn schedule_ended(joined: Result<std::thread::Result<()>, tokio::task::JoinError>) -> Result<()> {
    let payload = match joined {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(payload)) => payload,
        Err(e) if e.is_panic() => e.into_panic(),
        Err(e) => anyhow::bail!("the open model's schedule thread did not finish: {e}"),
    };
    let why = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    anyhow::bail!("the open model's schedule thread panicked: {why}")
}

/// Connections for the open model's database target, each with the target's ef_search (and
/// `search_path`, when given), each opened within the connect timeout.
async fn database_pool(
    url: &str,
    ef_search: u32,
    size: usize,
    search_path: Option<&str>,
) -> Result<sqlx::PgPool> {
    let mut options: sqlx::postgres::PgConnectOptions = url
        .parse()
        .with_context(|| format!("invalid database URL {}", crate::secrets::redact(url)))?;
    if let Some(path) = search_path {
        options = options.options([("search_path", path)]);
    }
    let limit = crate::db::connect_timeout();
    crate::db::search::search_pool_options(
        ef_search,
        crate::config::IterativeScan::Off,
        size.clamp(1, 1000) as u32,
    )
    .acquire_timeout(limit)
    .connect_with(options)
    .await
    .with_context(|| {
        format!(
            "connecting to {} (within {}, --connect-timeout)",
            crate::secrets::redact(url),
            humantime::format_duration(limit)
        )
    })
}
