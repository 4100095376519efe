//! The shapes of chat's REST answers, for the OpenAPI document only: the
//! gateway relays chat's bytes and never parses them.

use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat,
};
use utoipa::openapi::{KnownFormat, RefOr, Type};

/// Room names, as chat checks them (`chat::protocol::valid_room`).
pub const ROOM_PATTERN: &str = r"^[A-Za-z0-9_.:-]{1,64}$";

/// `{room}` in a path.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RoomPath {
    // ROOM_PATTERN, spelled out: utoipa takes only a literal here.
    #[param(pattern = r"^[A-Za-z0-9_.:-]{1,64}$")]
    pub room: String,
}

/// Most members a private room lists besides its creator (chat's
/// `MAX_ROOM_MEMBERS` counts the creator too).
const MAX_OTHER_MEMBERS: usize = 999;

/// `POST /api/v1/chat/rooms`: a public room `{name}` or a private one
/// `{name, private: true, members}`. One of two shapes because members are
/// refused for a public room, which one flat object could not say.
pub struct NewRoom;

impl utoipa::PartialSchema for NewRoom {
    fn schema() -> RefOr<Schema> {
        let name = || {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(ROOM_PATTERN))
                .description(Some("1 to 64 letters, digits, `_`, `.`, `:` or `-`."))
        };
        let flag = |value: bool| {
            ObjectBuilder::new()
                .schema_type(Type::Boolean)
                .enum_values(Some([value]))
        };
        let public = ObjectBuilder::new()
            .title(Some("public room"))
            .property("name", name())
            .property("private", flag(false))
            .property(
                "members",
                ArrayBuilder::new()
                    .items(ObjectBuilder::new().schema_type(Type::Integer))
                    .max_items(Some(0))
                    .description(Some("Only empty: members are for private rooms.")),
            )
            .required("name")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        let members = ArrayBuilder::new()
            .items(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                    .minimum(Some(1)),
            )
            .max_items(Some(MAX_OTHER_MEMBERS))
            .description(Some("User ids besides the creator, who is always one."));
        let private = ObjectBuilder::new()
            .title(Some("private room"))
            .property("name", name())
            .property("private", flag(true))
            .property("members", members)
            .required("name")
            .required("private")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        OneOfBuilder::new().item(public).item(private).into()
    }
}

impl utoipa::ToSchema for NewRoom {}

/// Who may enter a room.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct RoomInfo {
    pub room: String,
    pub private: bool,
    /// Created rooms only.
    pub owner: Option<u64>,
    /// Private rooms only.
    pub members: Option<Vec<u64>>,
}

/// `GET /api/v1/chat/rooms`: the names of the rooms you may see.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct RoomList {
    pub rooms: Vec<String>,
}

/// A signed-in user as the others in a room see them.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Member {
    pub id: u64,
    pub name: String,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Presence {
    pub room: String,
    pub members: Vec<Member>,
}

/// Where a room's stream is: `offset` within `epoch`, which changes when
/// the room's history is lost and offsets start again.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Position {
    pub offset: u64,
    pub epoch: String,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ChatMessage {
    pub room: String,
    pub id: String,
    pub offset: u64,
    pub epoch: String,
    pub user: Member,
    pub content: String,
    /// Usernames mentioned with `@name`; absent when none.
    pub mentions: Option<Vec<String>>,
    /// Unix milliseconds when chat accepted it.
    pub sent_at: u64,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct History {
    pub room: String,
    pub position: Position,
    pub messages: Vec<ChatMessage>,
}
