//! Node reputation: the arithmetic of beta reputations and the rules built on
//! them. Every audit outcome moves a node's audit reputation (wrong or missing
//! data) and its unknown-error reputation (answers that are neither); a node
//! whose audit score falls to the disqualification threshold is disqualified for
//! good, one whose unknown-error score falls to the suspension threshold is
//! suspended until it recovers. The metabase stores the numbers
//! ([`crate::Metabase::record_audit`]); this module decides what they mean.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The reputation rules (the `[reputation]` section of the satellite's config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReputationConfig {
    /// Forgetting factor λ applied to both α and β at every update (default 0.999).
    pub lambda: f64,
    /// Weight w added to α on a success, to β on a failure (default 1).
    pub weight: f64,
    /// α of a node never audited (default 1).
    pub initial_alpha: f64,
    /// β of a node never audited (default 0).
    pub initial_beta: f64,
    /// A node is disqualified, for good, when its audit score α/(α+β) is at or
    /// below this (default 0.96).
    pub disqualification_threshold: f64,
    /// A node is suspended (no new pieces) while its unknown-error score is at
    /// or below this (default 0.6).
    pub suspension_threshold: f64,
    /// Successful audits after which a node is vetted (default 100).
    pub vetting_audits: u64,
    /// Largest share of a new segment's pieces that go to unvetted nodes
    /// (default 0.05); more only when vetted nodes are too few.
    pub unvetted_share: f64,
}

impl Default for ReputationConfig {
    fn default() -> Self {
        ReputationConfig {
            lambda: 0.999,
            weight: 1.0,
            initial_alpha: 1.0,
            initial_beta: 0.0,
            disqualification_threshold: 0.96,
            suspension_threshold: 0.6,
            vetting_audits: 100,
            unvetted_share: 0.05,
        }
    }
}

impl ReputationConfig {
    pub fn validate(&self) -> Result<()> {
        let fraction = |v: f64| (0.0..=1.0).contains(&v);
        if self.lambda.is_nan() || self.lambda <= 0.0 || self.lambda > 1.0 {
            return Err(Error::Config("reputation lambda must be in (0, 1]".into()));
        }
        if self.weight.is_nan()
            || self.weight <= 0.0
            || self.initial_alpha < 0.0
            || self.initial_beta < 0.0
        {
            return Err(Error::Config(
                "reputation weight must be positive and initial alpha and beta not negative".into(),
            ));
        }
        if self.initial_alpha + self.initial_beta <= 0.0 {
            return Err(Error::Config(
                "initial alpha and beta must not both be zero".into(),
            ));
        }
        if !fraction(self.disqualification_threshold)
            || !fraction(self.suspension_threshold)
            || !fraction(self.unvetted_share)
        {
            return Err(Error::Config(
                "reputation thresholds and the unvetted share must be between 0 and 1".into(),
            ));
        }
        Ok(())
    }

    /// The beta reputation of a node never audited.
    pub fn initial(&self) -> Beta {
        Beta {
            alpha: self.initial_alpha,
            beta: self.initial_beta,
        }
    }
}

/// A beta reputation: evidence for (α) and against (β), both fading by λ.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Beta {
    pub alpha: f64,
    pub beta: f64,
}

impl Beta {
    /// The expected chance of a good outcome, α/(α+β).
    pub fn score(&self) -> f64 {
        let total = self.alpha + self.beta;
        if total > 0.0 {
            self.alpha / total
        } else {
            1.0
        }
    }

    /// The reputation after one more outcome: α' = λα + w·[good], β' = λβ + w·[bad].
    pub fn updated(self, good: bool, config: &ReputationConfig) -> Beta {
        let (add_alpha, add_beta) = increments(good, config);
        Beta {
            alpha: config.lambda * self.alpha + add_alpha,
            beta: config.lambda * self.beta + add_beta,
        }
    }

    /// How many consecutive bad outcomes bring the score to `threshold` or
    /// below (at most `limit`, `None` beyond it).
    pub fn bad_outcomes_until(
        self,
        threshold: f64,
        config: &ReputationConfig,
        limit: u32,
    ) -> Option<u32> {
        let mut reputation = self;
        for n in 0..=limit {
            if reputation.score() <= threshold {
                return Some(n);
            }
            reputation = reputation.updated(false, config);
        }
        None
    }
}

/// What one outcome adds to α and β (after both are multiplied by λ).
pub fn increments(good: bool, config: &ReputationConfig) -> (f64, f64) {
    if good {
        (config.weight, 0.0)
    } else {
        (0.0, config.weight)
    }
}

/// How one audit of one node ended, as far as reputation is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditOutcome {
    /// The node returned the challenged bytes and they verified.
    Success,
    /// Wrong bytes, a bad proof, a missing or damaged piece, or a challenge
    /// left unanswered past the containment limit.
    Failure,
    /// The node could not be reached: no reputation change, a failed contact.
    Offline,
    /// The node answered with some other error.
    Unknown,
}

/// A node's health as the metabase keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeHealth {
    pub audit: Beta,
    pub unknown: Beta,
    pub audit_total: i64,
    pub audit_success: i64,
    pub vetted_at: Option<i64>,
    pub disqualified_at: Option<i64>,
    pub suspended_at: Option<i64>,
    pub last_contact_success: i64,
    pub last_contact_failure: i64,
}

/// Length of one online-score window: audit contacts are counted per node
/// per window.
pub const ONLINE_WINDOW_SECS: i64 = 12 * 3600;
/// How far back the online score looks (30 days of windows).
pub const ONLINE_SCORE_PERIOD_SECS: i64 = 30 * 24 * 3600;

/// The online score of `online` reached contacts out of `total`; 1 without any.
pub fn online_score(total: i64, online: i64) -> f64 {
    if total <= 0 {
        1.0
    } else {
        online.clamp(0, total) as f64 / total as f64
    }
}

/// What should change in a node's standing after its reputation moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub disqualify: bool,
    pub suspend: bool,
    pub unsuspend: bool,
}

impl NodeHealth {
    pub fn is_vetted(&self, config: &ReputationConfig) -> bool {
        self.audit_success >= i64::try_from(config.vetting_audits).unwrap_or(i64::MAX)
    }

    /// The changes of standing this health calls for.
    pub fn verdict(&self, config: &ReputationConfig) -> Verdict {
        let suspended_by_score = self.unknown.score() <= config.suspension_threshold;
        Verdict {
            disqualify: self.disqualified_at.is_none()
                && self.audit.score() <= config.disqualification_threshold,
            suspend: self.suspended_at.is_none() && suspended_by_score,
            unsuspend: self.suspended_at.is_some() && !suspended_by_score,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn online_scores_are_shares_of_reached_contacts() {
        assert_eq!(online_score(0, 0), 1.0);
        assert_eq!(online_score(4, 3), 0.75);
        assert_eq!(online_score(4, 9), 1.0);
    }

    #[test]
    fn updates_follow_the_beta_formula() {
        let config = ReputationConfig::default();
        let start = config.initial();
        assert_eq!(start.score(), 1.0);
        let good = start.updated(true, &config);
        assert!(close(good.alpha, 0.999 + 1.0) && close(good.beta, 0.0));
        let bad = good.updated(false, &config);
        assert!(close(bad.alpha, 0.999 * 1.999) && close(bad.beta, 1.0));
        assert!(close(bad.score(), 0.999 * 1.999 / (0.999 * 1.999 + 1.0)));
        // A long run of successes approaches the fixed point α = w/(1-λ) = 1000.
        let mut long = start;
        for _ in 0..20_000 {
            long = long.updated(true, &config);
        }
        assert!((long.alpha - 1000.0).abs() < 1e-3, "{long:?}");
    }

    #[test]
    fn failures_to_disqualification_grow_with_history() {
        let config = ReputationConfig::default();
        let dq = config.disqualification_threshold;
        // Fresh (α=1, β=0): one failure gives 0.999/1.999 ≈ 0.5.
        assert_eq!(
            config.initial().bad_outcomes_until(dq, &config, 100),
            Some(1)
        );
        let mut history = config.initial();
        for _ in 0..100 {
            history = history.updated(true, &config);
        }
        // α ≈ 96 after 100 successes: β must reach about α/24, i.e. 4 failures.
        assert_eq!(history.bad_outcomes_until(dq, &config, 100), Some(4));
        // At the fixed point α = 1000 it takes 42 failures (λ fades α meanwhile).
        let saturated = Beta {
            alpha: 1000.0,
            beta: 0.0,
        };
        let n = saturated.bad_outcomes_until(dq, &config, 1000).unwrap();
        assert!((40..=42).contains(&n), "{n}");
        assert_eq!(
            Beta {
                alpha: 1.0,
                beta: 1.0
            }
            .bad_outcomes_until(dq, &config, 0),
            Some(0)
        );
        assert_eq!(saturated.bad_outcomes_until(dq, &config, 3), None);
    }

    #[test]
    fn verdicts_disqualify_once_and_suspend_reversibly() {
        let config = ReputationConfig::default();
        let mut health = NodeHealth {
            audit: config.initial(),
            unknown: config.initial(),
            audit_total: 0,
            audit_success: 0,
            vetted_at: None,
            disqualified_at: None,
            suspended_at: None,
            last_contact_success: 0,
            last_contact_failure: 0,
        };
        let nothing = Verdict {
            disqualify: false,
            suspend: false,
            unsuspend: false,
        };
        assert_eq!(health.verdict(&config), nothing);
        health.audit = health.audit.updated(false, &config);
        assert!(health.verdict(&config).disqualify);
        health.disqualified_at = Some(5);
        assert!(!health.verdict(&config).disqualify);

        health.unknown = health.unknown.updated(false, &config);
        assert!(health.verdict(&config).suspend);
        health.suspended_at = Some(6);
        assert_eq!(health.verdict(&config), nothing);
        for _ in 0..3 {
            health.unknown = health.unknown.updated(true, &config);
        }
        assert!(health.verdict(&config).unsuspend);

        assert!(!health.is_vetted(&config));
        health.audit_success = 100;
        assert!(health.is_vetted(&config));
    }

    #[test]
    fn configs_are_checked() {
        assert!(ReputationConfig::default().validate().is_ok());
        for broken in [
            ReputationConfig {
                lambda: 0.0,
                ..Default::default()
            },
            ReputationConfig {
                weight: 0.0,
                ..Default::default()
            },
            ReputationConfig {
                disqualification_threshold: 1.5,
                ..Default::default()
            },
            ReputationConfig {
                initial_alpha: 0.0,
                initial_beta: 0.0,
                ..Default::default()
            },
        ] {
            assert!(broken.validate().is_err(), "{broken:?}");
        }
    }
}
