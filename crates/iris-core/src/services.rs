//! What the message and job layers work with: the core's services they
//! share, handed over once.

use std::sync::Arc;

use iris_storage::Store;

use crate::bus::Events;
use crate::conversations::Conversations;
use crate::ownership::Ownership;
use crate::pool::Pool;
use crate::recorder::Recorder;
use crate::teams::Teams;

#[derive(Clone)]
pub(crate) struct Services {
    pub store: Store,
    pub recorder: Recorder,
    pub teams: Arc<Teams>,
    pub conversations: Arc<Conversations>,
    pub pool: Pool,
    pub events: Arc<dyn Events>,
    pub ownership: Arc<Ownership>,
}
