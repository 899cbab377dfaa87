//! Schedules: `every = "15m"` or a cron expression, and when a table is
//! next due.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The shortest interval accepted: syncs are not meant to spin.
const MIN_EVERY: Duration = Duration::from_secs(1);

/// When a table syncs by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Schedule {
    /// At a fixed interval after the last scheduled start.
    Every {
        /// A duration such as `"15m"`, `"1h"`, `"1d"`.
        every: String,
    },
    /// At the times a cron expression names (UTC): five fields, or six
    /// with seconds first.
    Cron {
        /// E.g. `"0 */2 * * *"`.
        cron: String,
    },
}

impl Schedule {
    /// Checks the text of `every` or `cron`.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Schedule::Every { every } => {
                let interval = humantime::parse_duration(every).map_err(|e| {
                    format!("every '{every}' is not a duration such as \"15m\" or \"1h\": {e}")
                })?;
                if interval < MIN_EVERY {
                    return Err(format!("every '{every}' is shorter than one second"));
                }
                Ok(())
            }
            Schedule::Cron { cron } => parse_cron(cron).map(|_| ()),
        }
    }

    /// The first due time after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Every { every } => {
                let interval = humantime::parse_duration(every).ok()?.max(MIN_EVERY);
                after.checked_add_signed(chrono::Duration::from_std(interval).ok()?)
            }
            Schedule::Cron { cron } => parse_cron(cron)
                .ok()?
                .find_next_occurrence(&after, false)
                .ok(),
        }
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Schedule::Every { every } => write!(f, "every {every}"),
            Schedule::Cron { cron } => write!(f, "cron {cron}"),
        }
    }
}

fn parse_cron(text: &str) -> Result<croner::Cron, String> {
    croner::Cron::from_str(text).map_err(|e| {
        format!(
            "cron '{text}' is not a cron expression (minute hour day month weekday, \
             optionally seconds first): {e}"
        )
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn intervals_and_cron_give_the_next_time() {
        let at = Utc.with_ymd_and_hms(2026, 1, 1, 10, 7, 0).unwrap();
        let every = Schedule::Every {
            every: "15m".into(),
        };
        every.validate().unwrap();
        assert_eq!(
            every.next_after(at),
            Some(Utc.with_ymd_and_hms(2026, 1, 1, 10, 22, 0).unwrap())
        );
        let cron = Schedule::Cron {
            cron: "0 */2 * * *".into(),
        };
        cron.validate().unwrap();
        assert_eq!(
            cron.next_after(at),
            Some(Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap())
        );
        let seconds = Schedule::Cron {
            cron: "*/5 * * * * *".into(),
        };
        assert_eq!(
            seconds.next_after(at),
            Some(Utc.with_ymd_and_hms(2026, 1, 1, 10, 7, 5).unwrap())
        );
    }

    #[test]
    fn bad_schedules_are_named() {
        let err = Schedule::Every {
            every: "soon".into(),
        }
        .validate()
        .unwrap_err();
        assert!(err.contains("'soon'"), "{err}");
        let err = Schedule::Every {
            every: "10ms".into(),
        }
        .validate()
        .unwrap_err();
        assert!(err.contains("shorter"), "{err}");
        let err = Schedule::Cron {
            cron: "61 * * * *".into(),
        }
        .validate()
        .unwrap_err();
        assert!(err.contains("'61 * * * *'"), "{err}");
    }
}
