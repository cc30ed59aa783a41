//! The audit log: batched inserts, listing, retention.

use super::super::db::{Tx, Value, params};
use super::super::error::StoreError;
use super::super::model::{AuditEntry, AuditFilter};
use crate::services::control::ToolCallRecord;
use crate::services::time::fmt_ms;
use std::sync::LazyLock;

const COLUMNS: &str = "at_ms, user_name, workspace, agent, agent_id, tool, args_bytes, \
     result_bytes, outcome, detail, duration_us";
const PER_ROW: usize = 11;

/// Row counts one INSERT statement carries; a batch is cut into these so only a few
/// statement texts exist (each prepared once per connection).
const CHUNKS: [usize; 3] = [128, 16, 1];

static INSERTS: LazyLock<Vec<(usize, String)>> = LazyLock::new(|| {
    CHUNKS
        .iter()
        .map(|&n| {
            let rows: Vec<String> = (0..n)
                .map(|r| {
                    let ps: Vec<String> = (1..=PER_ROW)
                        .map(|c| format!("${}", r * PER_ROW + c))
                        .collect();
                    format!("({})", ps.join(", "))
                })
                .collect();
            (
                n,
                format!(
                    "INSERT INTO audit_log ({COLUMNS}) VALUES {}",
                    rows.join(", ")
                ),
            )
        })
        .collect()
});

fn values(r: &ToolCallRecord, out: &mut Vec<Value>) {
    let at =
        r.at.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
    out.extend([
        Value::I64(at),
        r.user.clone().into(),
        r.workspace.clone().into(),
        r.agent.clone().into(),
        r.agent_id.map(|a| a.0).into(),
        r.tool.clone().into(),
        Value::I64(r.args_bytes.min(i64::MAX as u64) as i64),
        Value::I64(r.result_bytes.min(i64::MAX as u64) as i64),
        r.outcome.as_str().into(),
        r.detail.clone().into(),
        Value::I64(r.duration.as_micros().min(i64::MAX as u128) as i64),
    ]);
}

/// Inserts `records` in as few statements as the chunk sizes allow.
pub(crate) async fn insert(tx: &mut dyn Tx, records: &[ToolCallRecord]) -> Result<(), StoreError> {
    let mut rest = records;
    while !rest.is_empty() {
        let Some((n, sql)) = INSERTS.iter().find(|(n, _)| *n <= rest.len()) else {
            break;
        };
        let (now, later) = rest.split_at(*n);
        let mut ps = Vec::with_capacity(n * PER_ROW);
        for r in now {
            values(r, &mut ps);
        }
        tx.execute(sql, ps).await?;
        rest = later;
    }
    Ok(())
}

/// Entries matching `f`, newest first.
pub(crate) async fn list(tx: &mut dyn Tx, f: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
    let limit = i64::from(f.limit.unwrap_or(100).clamp(1, 10_000));
    let rows = tx
        .query(
            "SELECT id, at_ms, user_name, workspace, agent, agent_id, tool, args_bytes, \
             result_bytes, outcome, detail, duration_us FROM audit_log \
             WHERE (CAST($1 AS TEXT) IS NULL OR user_name = $1) \
             AND (CAST($2 AS TEXT) IS NULL OR workspace = $2) \
             AND (CAST($3 AS BIGINT) IS NULL OR at_ms >= $3) \
             AND (CAST($4 AS BIGINT) IS NULL OR id < $4) \
             ORDER BY id DESC LIMIT $5",
            params![
                f.user.clone(),
                f.workspace.clone(),
                f.since_ms,
                f.before_id,
                limit
            ],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push(AuditEntry {
            id: r.i64(0)?,
            at: fmt_ms(r.i64(1)?),
            user: r.text(2)?,
            workspace: r.opt_text(3)?,
            agent: r.opt_text(4)?,
            agent_id: r.opt_uuid(5)?.map(|u| u.to_string()),
            tool: r.text(6)?,
            args_bytes: r.i64(7)?.max(0) as u64,
            result_bytes: r.i64(8)?.max(0) as u64,
            outcome: r.text(9)?,
            detail: r.opt_text(10)?,
            duration_ms: r.i64(11)? as f64 / 1000.0,
        });
    }
    Ok(out)
}

/// Removes entries older than `before_ms`; how many.
pub(crate) async fn prune(tx: &mut dyn Tx, before_ms: i64) -> Result<u64, StoreError> {
    Ok(tx
        .execute("DELETE FROM audit_log WHERE at_ms < $1", params![before_ms])
        .await?)
}
