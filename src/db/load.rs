//! Bulk load through binary COPY: rows are generated and encoded in parallel, in batches, on a
//! thread of their own, and streamed to PostgreSQL while the next batch is being made — never one
//! 600 MB buffer, never a row INSERT.

use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use rayon::prelude::*;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::dataset::{Dataset, EMBEDDING_MODEL_ID, TraceRow};

/// The columns every traces table capbench has made carries (generator version 1 had no `tags`):
/// what setup checks to know a table as its own, and carries from an older one.
pub const V1_COLUMNS: &str = "id, title, context_text, solution_text, embedding, embedding_model_id, \
     status, trust_score, confirmation_count, contributor_id, is_seed, is_flagged, agent_model, \
     agent_version, created_at";

/// The columns, in the order `encode_row` writes them: [`V1_COLUMNS`], then `tags`.
pub const COPY_COLUMNS: &str = "id, title, context_text, solution_text, embedding, embedding_model_id, \
     status, trust_score, confirmation_count, contributor_id, is_seed, is_flagged, agent_model, \
     agent_version, created_at, tags";
const FIELD_COUNT: i16 = 16;

/// PostgreSQL's type oid of `text` (the element type of `text[]` in binary COPY).
const TEXT_OID: i32 = 25;

/// Microseconds from PostgreSQL's epoch (2000-01-01) to 2026-01-01, where generated rows start.
const CREATED_BASE_US: i64 = 820_540_800 * 1_000_000;

/// `PGCOPY\n\377\r\n\0`, flags, header extension length.
pub fn encode_header(buf: &mut Vec<u8>) {
    buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    buf.extend_from_slice(&0i32.to_be_bytes());
    buf.extend_from_slice(&0i32.to_be_bytes());
}

pub fn encode_trailer(buf: &mut Vec<u8>) {
    buf.extend_from_slice(&(-1i16).to_be_bytes());
}

fn field(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
    buf.extend_from_slice(bytes);
}

fn null(buf: &mut Vec<u8>) {
    buf.extend_from_slice(&(-1i32).to_be_bytes());
}

/// pgvector's binary `vector`: int16 dimensions, int16 unused, then big-endian float4s.
pub fn encode_vector(buf: &mut Vec<u8>, v: &[f32]) {
    buf.extend_from_slice(&((4 + 4 * v.len()) as i32).to_be_bytes());
    buf.extend_from_slice(&(v.len() as i16).to_be_bytes());
    buf.extend_from_slice(&0i16.to_be_bytes());
    let start = buf.len();
    buf.resize(start + 4 * v.len(), 0);
    for (dst, x) in buf[start..].chunks_exact_mut(4).zip(v) {
        dst.copy_from_slice(&x.to_be_bytes());
    }
}

/// One tuple of a generated trace, in `COPY_COLUMNS` order.
pub fn encode_row(buf: &mut Vec<u8>, row: &TraceRow, contributor: Uuid) {
    buf.extend_from_slice(&FIELD_COUNT.to_be_bytes());
    field(buf, row.id.as_bytes());
    field(buf, row.title.as_bytes());
    field(buf, row.context_text.as_bytes());
    field(buf, row.solution_text.as_bytes());
    encode_vector(buf, &row.embedding);
    field(buf, EMBEDDING_MODEL_ID.as_bytes());
    field(buf, b"validated");
    field(buf, &1.0f64.to_be_bytes()); // trust_score
    field(buf, &2i32.to_be_bytes()); // confirmation_count
    field(buf, contributor.as_bytes());
    field(buf, &[1]); // is_seed
    field(buf, &[0]); // is_flagged
    null(buf); // agent_model
    null(buf); // agent_version
    field(
        buf,
        &(CREATED_BASE_US + row.created_offset_s * 1_000_000).to_be_bytes(),
    );
    let names: Vec<String> = row.tags.iter().map(|t| t.name()).collect();
    encode_text_array(buf, &names);
}

/// PostgreSQL's binary array of `text`: dimensions, no-null flag, element type, then each bound and
/// element (an empty array has no dimension).
pub fn encode_text_array(buf: &mut Vec<u8>, items: &[String]) {
    let body: usize = 12
        + if items.is_empty() { 0 } else { 8 }
        + items.iter().map(|s| 4 + s.len()).sum::<usize>();
    buf.extend_from_slice(&(body as i32).to_be_bytes());
    buf.extend_from_slice(&i32::from(!items.is_empty()).to_be_bytes());
    buf.extend_from_slice(&0i32.to_be_bytes());
    buf.extend_from_slice(&TEXT_OID.to_be_bytes());
    if !items.is_empty() {
        buf.extend_from_slice(&(items.len() as i32).to_be_bytes());
        buf.extend_from_slice(&1i32.to_be_bytes());
    }
    for s in items {
        field(buf, s.as_bytes());
    }
}

/// Rows `[start, end)` encoded as COPY tuples, generated in parallel on the current rayon pool,
/// in order.
pub fn encode_batch(dataset: &Dataset, start: u64, end: u64, contributor: Uuid) -> Vec<u8> {
    const CHUNK: u64 = 128;
    let chunks: Vec<(u64, u64)> = (start..end)
        .step_by(CHUNK as usize)
        .map(|s| (s, (s + CHUNK).min(end)))
        .collect();
    let parts: Vec<Vec<u8>> = chunks
        .into_par_iter()
        .map(|(s, e)| {
            let mut buf = Vec::with_capacity((e - s) as usize * (dataset.dims() * 4 + 1024));
            for i in s..e {
                encode_row(&mut buf, &dataset.row(i), contributor);
            }
            buf
        })
        .collect();
    parts.concat()
}

/// Lowers the calling thread's scheduling priority (Linux nice is per thread): the generator runs
/// ahead of the COPY by two batches, so when a core is contended the server ingesting the rows
/// should win it, not the harness feeding them.
fn yield_cpu_to_server() {
    // SAFETY: setpriority only reads its integer arguments; `0` is the calling thread.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}

/// Streams every row of `dataset` into `table` with binary COPY on `conn` (inside the caller's
/// transaction). Generation runs ahead on its own thread by at most two batches. `progress` is
/// called with the number of rows sent so far. Returns the row count PostgreSQL reports.
pub async fn copy_dataset(
    conn: &mut PgConnection,
    table: &str,
    dataset: Arc<Dataset>,
    contributor: Uuid,
    batch_rows: u64,
    progress: impl Fn(u64),
) -> Result<u64> {
    let rows = dataset.rows();
    let batch_rows = batch_rows.max(1);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(u64, Vec<u8>)>(2);
    // Generation leaves one core to the PostgreSQL backend that ingests the rows.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .saturating_sub(1)
        .max(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("capbench-generate-{i}"))
        .start_handler(|_| yield_cpu_to_server())
        .build()
        .context("starting the generator threads")?;
    let producer = std::thread::Builder::new()
        .name("capbench-generate".into())
        .spawn(move || {
            let mut header = Vec::new();
            encode_header(&mut header);
            if tx.blocking_send((0, header)).is_err() {
                return;
            }
            let mut start = 0;
            while start < rows {
                let end = (start + batch_rows).min(rows);
                let batch = pool.install(|| encode_batch(&dataset, start, end, contributor));
                if tx.blocking_send((end, batch)).is_err() {
                    return; // the COPY side gave up; stop generating
                }
                start = end;
            }
            let mut trailer = Vec::new();
            encode_trailer(&mut trailer);
            let _ = tx.blocking_send((rows, trailer));
        })
        .context("starting the generator thread")?;

    let statement = format!("COPY {table} ({COPY_COLUMNS}) FROM STDIN (FORMAT binary)");
    let mut copy = conn
        .copy_in_raw(&statement)
        .await
        .with_context(|| statement.clone())?;
    let mut sent = 0;
    while let Some((done, bytes)) = rx.recv().await {
        if let Err(e) = copy.send(bytes).await {
            drop(rx);
            join_generator(producer)?;
            return Err(e).context("sending COPY data");
        }
        if done != sent {
            sent = done;
            progress(sent);
        }
    }
    // The channel closes when the generator returns — or panics: then the COPY must not be
    // finished (it would store the rows sent so far and surface as a wrong row count).
    if let Err(e) = join_generator(producer) {
        let _ = copy.abort("the row generator failed").await;
        return Err(e);
    }
    let copied = copy.finish().await.context("finishing COPY")?;
    Ok(copied)
}

/// Waits for the generator thread; its panic becomes an error carrying the panic's message.
fn join_generator(producer: std::thread::JoinHandle<()>) -> Result<()> {
    producer.join().map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        anyhow!("the row generator panicked: {message}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_columns_extend_version_1s() {
        assert_eq!(COPY_COLUMNS, format!("{V1_COLUMNS}, tags"));
        assert_eq!(COPY_COLUMNS.split(',').count(), FIELD_COUNT as usize);
    }

    #[test]
    fn text_arrays_encode_as_postgres_reads_them() {
        let mut buf = Vec::new();
        encode_text_array(&mut buf, &["u1".into(), "c50".into()]);
        let mut want = Vec::new();
        for word in [12 + 8 + 6 + 7, 1, 0, 25, 2, 1i32] {
            want.extend_from_slice(&word.to_be_bytes());
        }
        want.extend_from_slice(&2i32.to_be_bytes());
        want.extend_from_slice(b"u1");
        want.extend_from_slice(&3i32.to_be_bytes());
        want.extend_from_slice(b"c50");
        assert_eq!(buf, want);
        let mut empty = Vec::new();
        encode_text_array(&mut empty, &[]);
        assert_eq!(
            empty.len(),
            4 + 12,
            "length, then ndim 0, flags, element type"
        );
    }
}
