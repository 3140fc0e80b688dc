//! What the agent checks in a message from the controller before acting on
//! it. The controller is authenticated (mTLS), but the agent still refuses
//! what no honest controller sends: a job id that is not a canonical UUID
//! names scratch and staging paths (`work/<id>`, `backup-<id>`, redis's
//! `.<file>.trireme-<id>`), so anything else could point a job, and its
//! clean-up, outside the agent's own directories.

use trireme_proto::v1::JobAssignment;

/// Whether `a` may be run; the reason if not.
///
/// # Errors
/// A job id that is not a lowercase hyphenated UUID, or an empty source name.
pub fn check_assignment(a: &JobAssignment) -> Result<(), String> {
    check_job_id(&a.job_id)?;
    if a.source_name.is_empty() {
        return Err(format!("job {} names no source", a.job_id));
    }
    Ok(())
}

/// A job id is a lowercase hyphenated UUID, exactly as the controller
/// writes it.
///
/// # Errors
/// Anything else, quoted.
pub fn check_job_id(id: &str) -> Result<(), String> {
    match uuid::Uuid::parse_str(id) {
        Ok(u) if u.hyphenated().to_string() == id => Ok(()),
        _ => Err(format!(
            "the controller sent job id {id:?}, which is not a UUID; refused"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assign(id: &str) -> JobAssignment {
        JobAssignment {
            job_id: id.into(),
            source_name: "files".into(),
            ..Default::default()
        }
    }

    #[test]
    fn only_canonical_uuids_name_jobs() {
        assert!(check_assignment(&assign("0193a0b1-0000-7000-8000-000000000002")).is_ok());
        for bad in [
            "",
            "../../etc",
            "0193a0b1-0000-7000-8000-000000000002/../x",
            "0193A0B1-0000-7000-8000-000000000002",
            "0193a0b100007000800000000000000002",
            "{0193a0b1-0000-7000-8000-000000000002}",
            "urn:uuid:0193a0b1-0000-7000-8000-000000000002",
        ] {
            let err = check_assignment(&assign(bad)).unwrap_err();
            assert!(err.contains("not a UUID"), "{bad:?}: {err}");
        }
        let mut a = assign("0193a0b1-0000-7000-8000-000000000002");
        a.source_name.clear();
        assert!(check_assignment(&a)
            .unwrap_err()
            .contains("names no source"));
    }
}
