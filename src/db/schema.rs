//! setup/schema.sql, the one source of the schema, split into its `-- @section` parts and filled in.

use anyhow::{Result, anyhow};

use crate::config::IndexParams;

/// The schema file, compiled in.
pub const SCHEMA_SQL: &str = include_str!("../../setup/schema.sql");

/// The SQL of section `name` (without its marker line).
pub fn section(name: &str) -> Result<&'static str> {
    let marker = format!("-- @section {name}\n");
    let start = SCHEMA_SQL
        .find(&marker)
        .ok_or_else(|| anyhow!("setup/schema.sql has no section '{name}'"))?
        + marker.len();
    let end = SCHEMA_SQL[start..]
        .find("-- @section ")
        .map_or(SCHEMA_SQL.len(), |i| start + i);
    Ok(&SCHEMA_SQL[start..end])
}

/// Section `name` with `{{dims}}`, `{{m}}` and `{{ef_construction}}` filled in.
pub fn render(name: &str, dims: u32, index: &IndexParams) -> Result<String> {
    Ok(section(name)?
        .replace("{{dims}}", &dims.to_string())
        .replace("{{m}}", &index.m.to_string())
        .replace("{{ef_construction}}", &index.ef_construction.to_string()))
}

/// The HNSW index's name (from the schema's `traces_index` section).
pub const HNSW_INDEX: &str = "ix_traces_embedding_hnsw";

/// The GIN index on `traces.tags` (section traces_constraints).
pub const TAGS_INDEX: &str = "ix_traces_tags";
