//! `GET /access/permissions`: the token's effective privileges per ACL path.

use serde_json::json;

use crate::api::{ApiResult, Ctx, Reply};

pub(super) fn permissions(ctx: &mut Ctx) -> ApiResult {
    if let Some(userid) = ctx.params.get("userid")
        && userid != ctx.token.tokenid
        && userid != ctx.token.user()
    {
        ctx.token.check("/access", &["Sys.Audit"], false)?;
        let world = ctx.world();
        let Some(other) = world.tokens.get(userid).cloned() else {
            return Reply::data(json!({}));
        };
        drop(world);
        return Reply::data(json!(other.permissions(ctx.params.get("path"))));
    }
    Reply::data(json!(ctx.token.permissions(ctx.params.get("path"))))
}
