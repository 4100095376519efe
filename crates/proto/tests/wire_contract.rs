//! The wire format is the contract: these tests pin field numbers, so a
//! renumbering in `proto/` fails here before it breaks a deployed client.

#![allow(clippy::unwrap_used)]

use platform_proto::users::v1::{CreateUserRequest, ListUsersResponse, UpdateUserRequest, User};
use prost::Message;

#[test]
fn user_fields_keep_their_numbers() {
    let user = User {
        id: 7,
        username: "ann".into(),
        email: "a@b.c".into(),
        created_at: "t1".into(),
        updated_at: "t2".into(),
        version: 0,
    };
    // tag = field_number << 3 | wire_type (0 varint, 2 length-delimited)
    let expected: Vec<u8> = [
        &[0x08, 7][..],
        &[0x12, 3, b'a', b'n', b'n'],
        &[0x1a, 5, b'a', b'@', b'b', b'.', b'c'],
        &[0x22, 2, b't', b'1'],
        &[0x2a, 2, b't', b'2'],
    ]
    .concat();
    assert_eq!(user.encode_to_vec(), expected);
}

#[test]
fn create_request_carries_password_as_field_three() {
    let request = CreateUserRequest {
        username: "u".into(),
        email: "e".into(),
        password: "p".into(),
    };
    assert_eq!(
        request.encode_to_vec(),
        [0x0a, 1, b'u', 0x12, 1, b'e', 0x1a, 1, b'p']
    );
}

#[test]
fn update_request_from_an_old_client_still_decodes() {
    // The seed's UpdateUserRequest had plain (non-optional) fields 1..3.
    let old_client_bytes = [0x08, 9, 0x12, 2, b'z', b'z'];
    let decoded = UpdateUserRequest::decode(&old_client_bytes[..]).unwrap();
    assert_eq!(decoded.id, 9);
    assert_eq!(decoded.username.as_deref(), Some("zz"));
    assert_eq!(decoded.email, None, "absent means unchanged");
    assert_eq!(
        decoded.expected_version, None,
        "old clients do not ask for a version check"
    );
}

#[test]
fn list_response_total_is_field_two() {
    let response = ListUsersResponse {
        users: vec![],
        total: 3,
    };
    assert_eq!(response.encode_to_vec(), [0x10, 3]);
}

#[test]
fn descriptor_set_describes_every_service_for_reflection() {
    let set = prost_types::FileDescriptorSet::decode(platform_proto::FILE_DESCRIPTOR_SET).unwrap();
    let methods = |service: &str| -> Vec<String> {
        set.file
            .iter()
            .flat_map(|f| &f.service)
            .find(|s| s.name() == service)
            .unwrap_or_else(|| panic!("{service} missing"))
            .method
            .iter()
            .map(|m| m.name().to_owned())
            .collect()
    };
    // The seed's five come first, in their original order.
    assert_eq!(
        methods("UserService")[..5],
        [
            "GetUser",
            "CreateUser",
            "UpdateUser",
            "DeleteUser",
            "ListUsers"
        ]
    );
    assert!(methods("UserService").contains(&"VerifyCredentials".to_owned()));
    assert!(methods("PostService").contains(&"ListPostsByAuthor".to_owned()));
    assert!(methods("CommentService").contains(&"ListCommentsByPost".to_owned()));
    assert!(methods("CommentService").contains(&"ListCommentsByAuthor".to_owned()));
}
