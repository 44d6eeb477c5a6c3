//! Repair workers (being written).

use std::sync::Arc;

use crate::audit::AuditRequests;
use crate::deletes::PieceDeleter;
use crate::metrics::Metrics;
use crate::orders::OrderSigner;
use crate::worker::{Progress, Work};
use crate::{Config, Metabase, Result};

#[derive(Clone)]
pub struct Repairer {
    config: Config,
    orders: OrderSigner,
    metabase: Metabase,
    deleter: PieceDeleter,
    metrics: Arc<Metrics>,
    audit_requests: Option<AuditRequests>,
}

impl Repairer {
    pub fn new(
        config: Config,
        orders: OrderSigner,
        metabase: Metabase,
        deleter: PieceDeleter,
        metrics: Arc<Metrics>,
        audit_requests: Option<AuditRequests>,
    ) -> Self {
        Repairer {
            config,
            orders,
            metabase,
            deleter,
            metrics,
            audit_requests,
        }
    }
}

impl Work for Repairer {
    async fn run_once(&mut self) -> Result<Progress> {
        Ok(Progress::Idle)
    }
}
