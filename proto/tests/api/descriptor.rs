//! The reflection descriptor, and through it the `.proto` files themselves:
//! every element of the API reference is documented, versioned and laid out
//! as the services' clients expect.

use prost::Message;
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorProto, FileDescriptorSet};

fn descriptor_set() -> FileDescriptorSet {
    FileDescriptorSet::decode(weft_proto::FILE_DESCRIPTOR_SET).expect("the descriptor set decodes")
}

fn weft_files() -> Vec<FileDescriptorProto> {
    descriptor_set()
        .file
        .into_iter()
        .filter(|f| f.package().starts_with("weft."))
        .collect()
}

// Field numbers of descriptor.proto, used in SourceCodeInfo paths.
const FILE_MESSAGE: i32 = 4;
const FILE_ENUM: i32 = 5;
const FILE_SERVICE: i32 = 6;
const MESSAGE_FIELD: i32 = 2;
const MESSAGE_NESTED: i32 = 3;
const MESSAGE_ENUM: i32 = 4;
const MESSAGE_ONEOF: i32 = 8;
const ENUM_VALUE: i32 = 2;
const SERVICE_METHOD: i32 = 2;

/// Collects, for one file, the path and a readable name of every element that
/// must carry a comment.
struct Walk {
    elements: Vec<(Vec<i32>, String)>,
}

impl Walk {
    fn file(file: &FileDescriptorProto) -> Self {
        let mut walk = Walk { elements: vec![] };
        for (i, m) in file.message_type.iter().enumerate() {
            walk.message(vec![FILE_MESSAGE, i as i32], file.package(), m);
        }
        for (i, e) in file.enum_type.iter().enumerate() {
            walk.enumeration(vec![FILE_ENUM, i as i32], file.package(), e);
        }
        for (i, s) in file.service.iter().enumerate() {
            let path = vec![FILE_SERVICE, i as i32];
            let name = format!("{}.{}", file.package(), s.name());
            for (j, m) in s.method.iter().enumerate() {
                walk.push(
                    [&path[..], &[SERVICE_METHOD, j as i32]].concat(),
                    format!("{name}.{}", m.name()),
                );
            }
            walk.push(path, name);
        }
        walk
    }

    fn push(&mut self, path: Vec<i32>, name: String) {
        self.elements.push((path, name));
    }

    fn message(&mut self, path: Vec<i32>, scope: &str, m: &DescriptorProto) {
        let name = format!("{scope}.{}", m.name());
        for (i, f) in m.field.iter().enumerate() {
            self.push(
                [&path[..], &[MESSAGE_FIELD, i as i32]].concat(),
                format!("{name}.{}", f.name()),
            );
        }
        for (i, o) in m.oneof_decl.iter().enumerate() {
            self.push(
                [&path[..], &[MESSAGE_ONEOF, i as i32]].concat(),
                format!("{name}.{} (oneof)", o.name()),
            );
        }
        for (i, n) in m.nested_type.iter().enumerate() {
            self.message([&path[..], &[MESSAGE_NESTED, i as i32]].concat(), &name, n);
        }
        for (i, e) in m.enum_type.iter().enumerate() {
            self.enumeration([&path[..], &[MESSAGE_ENUM, i as i32]].concat(), &name, e);
        }
        self.push(path, name);
    }

    fn enumeration(&mut self, path: Vec<i32>, scope: &str, e: &EnumDescriptorProto) {
        let name = format!("{scope}.{}", e.name());
        for (i, v) in e.value.iter().enumerate() {
            self.push(
                [&path[..], &[ENUM_VALUE, i as i32]].concat(),
                format!("{name}.{}", v.name()),
            );
        }
        self.push(path, name);
    }
}

#[test]
fn every_message_field_enum_and_rpc_is_documented() {
    let files = weft_files();
    assert_eq!(files.len(), 3, "discovery, identity and policy");
    let mut undocumented = vec![];
    let mut checked = 0;
    for file in &files {
        let info = file
            .source_code_info
            .as_ref()
            .expect("comments are kept in the descriptor");
        for (path, name) in Walk::file(file).elements {
            checked += 1;
            let documented = info
                .location
                .iter()
                .any(|l| l.path == path && !l.leading_comments().trim().is_empty());
            if !documented {
                undocumented.push(name);
            }
        }
    }
    assert!(checked > 150, "walked only {checked} elements");
    assert!(
        undocumented.is_empty(),
        "without a leading comment: {undocumented:#?}"
    );
}

#[test]
fn packages_are_versioned_and_live_where_their_name_says() {
    let mut packages: Vec<(String, String)> = weft_files()
        .into_iter()
        .map(|f| (f.package().to_owned(), f.name().to_owned()))
        .collect();
    packages.sort();
    assert_eq!(
        packages,
        [
            (
                "weft.discovery.v1".into(),
                "weft/discovery/v1/discovery.proto".into()
            ),
            (
                "weft.identity.v1".into(),
                "weft/identity/v1/identity.proto".into()
            ),
            (
                "weft.policy.v1".into(),
                "weft/policy/v1/policy.proto".into()
            ),
        ]
    );
}

#[test]
fn services_have_the_agreed_shape() {
    let mut rpcs = vec![];
    for file in weft_files() {
        for service in &file.service {
            for m in &service.method {
                rpcs.push(format!(
                    "{}.{}/{}({}) -> {}{}",
                    file.package(),
                    service.name(),
                    m.name(),
                    m.input_type(),
                    if m.server_streaming() { "stream " } else { "" },
                    m.output_type(),
                ));
                assert!(!m.client_streaming(), "{}", m.name());
            }
        }
    }
    rpcs.sort();
    assert_eq!(
        rpcs,
        [
            "weft.discovery.v1.Discovery/Watch(.weft.discovery.v1.WatchRequest) -> stream .weft.discovery.v1.Update",
            "weft.identity.v1.Identity/Certify(.weft.identity.v1.CertifyRequest) -> .weft.identity.v1.CertifyResponse",
            "weft.policy.v1.Policy/WatchInbound(.weft.policy.v1.InboundRequest) -> stream .weft.policy.v1.InboundPolicy",
        ]
    );
}

#[test]
fn every_enum_starts_unspecified() {
    for file in weft_files() {
        let mut enums: Vec<&EnumDescriptorProto> = file.enum_type.iter().collect();
        let mut stack: Vec<&DescriptorProto> = file.message_type.iter().collect();
        while let Some(m) = stack.pop() {
            enums.extend(&m.enum_type);
            stack.extend(&m.nested_type);
        }
        for e in enums {
            let zero = e
                .value
                .iter()
                .find(|v| v.number() == 0)
                .expect("a zero value");
            assert!(
                zero.name().ends_with("_UNSPECIFIED"),
                "{}: {}",
                e.name(),
                zero.name()
            );
        }
    }
}

#[test]
fn imports_are_in_the_set_for_reflection() {
    let names: Vec<String> = descriptor_set()
        .file
        .into_iter()
        .map(|f| f.name().to_owned())
        .collect();
    for wkt in [
        "google/protobuf/duration.proto",
        "google/protobuf/timestamp.proto",
    ] {
        assert!(
            names.iter().any(|n| n == wkt),
            "{wkt} missing from {names:?}"
        );
    }
}
