//! The frame of every operator page: the shared page shell with a navigation bar that
//! shows what the operator's role may open, and a log-out button.

use maud::{html, Markup};

use crate::http::auth::{Permission, Role};
use crate::ui::account::operator::{csrf_field, Operator};
use crate::ui::layout::{page, PageHead};

/// One navigation entry: label, path, and who sees it.
pub struct NavItem {
    pub label: &'static str,
    pub path: &'static str,
    pub permission: Permission,
}

/// The operator pages, in navigation order. Their paths are the contract between the
/// pages' authors.
pub const NAV: &[NavItem] = &[
    NavItem {
        label: "Dashboard",
        path: "/dashboard",
        permission: Permission::Read,
    },
    NavItem {
        label: "Payments",
        path: "/dashboard/payments",
        permission: Permission::Read,
    },
    NavItem {
        label: "Sessions",
        path: "/dashboard/sessions",
        permission: Permission::Read,
    },
    NavItem {
        label: "Doors",
        path: "/dashboard/doors",
        permission: Permission::Read,
    },
    NavItem {
        label: "Devices",
        path: "/dashboard/devices",
        permission: Permission::Read,
    },
    NavItem {
        label: "Audit",
        path: "/dashboard/audit",
        permission: Permission::Read,
    },
    NavItem {
        label: "Reports",
        path: "/dashboard/reports",
        permission: Permission::Read,
    },
    NavItem {
        label: "Deliveries",
        path: "/dashboard/deliveries",
        permission: Permission::Read,
    },
    NavItem {
        label: "Parked",
        path: "/dashboard/parked",
        permission: Permission::Read,
    },
    NavItem {
        label: "Mail",
        path: "/dashboard/mail",
        permission: Permission::Read,
    },
    NavItem {
        label: "Settings",
        path: "/settings",
        permission: Permission::Administer,
    },
    NavItem {
        label: "Users",
        path: "/users",
        permission: Permission::Administer,
    },
    NavItem {
        label: "API",
        path: "/api/reference",
        permission: Permission::Read,
    },
    NavItem {
        label: "Account",
        path: "/account",
        permission: Permission::Read,
    },
];

/// Navigation, wider main column and tables for operator pages, served as
/// `/static/shell.css` (kept apart from the guests' style sheet; never inline, which the
/// Content-Security-Policy forbids).
pub const SHELL_CSS: &str = "main{max-width:72rem}\
nav.dash{display:flex;flex-wrap:wrap;gap:.25rem .5rem;align-items:center;margin:0 0 1rem;\
padding:.5rem 0;border-bottom:1px solid var(--line)}\
nav.dash a{padding:.35rem .6rem;border-radius:.4rem;color:var(--ink);text-decoration:none}\
nav.dash a[aria-current=page]{background:var(--brand);color:var(--brand-text)}\
nav.dash form{display:inline;margin-left:auto}\
nav.dash .who{color:var(--muted);font-size:.9rem;overflow-wrap:anywhere}\
nav.dash button,form.inline button{padding:.35rem .7rem;width:auto}\
form.inline{display:inline}\
.visually-hidden{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}\
table.data{width:100%;border-collapse:collapse;background:var(--card)}\
table.data th,table.data td{text-align:left;padding:.4rem .5rem;border-bottom:1px solid var(--line)}\
.notice{padding:.75rem 1rem;border-radius:.5rem;border:1px solid var(--line);background:#fffbe6}\
.notice.good{background:#e9f7ee}.notice.bad{background:#fdecee}\
code.secret{font-size:1.05rem;word-break:break-all}";

/// A whole operator page: the branded page shell, the role's navigation (the entry
/// labelled `title` marked current) and `body`.
pub fn shell(op: &Operator, title: &str, body: Markup) -> Markup {
    page(
        PageHead::new(title, op.branding.clone()),
        html! {
            link rel="stylesheet" href="/static/shell.css";
            nav.dash aria-label="Dashboard" {
                @for item in NAV.iter().filter(|item| op.role.allows(item.permission)) {
                    @if item.label == title {
                        a href=(item.path) aria-current="page" { (item.label) }
                    } @else {
                        a href=(item.path) { (item.label) }
                    }
                }
                form method="post" action="/logout" {
                    (csrf_field(op))
                    span.who { (op.email) " · " (role_name(op.role)) " " }
                    button type="submit" { "Log out" }
                }
            }
            (body)
        },
    )
}

/// A role as people read it.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Admin => "admin",
        Role::Operator => "operator",
        Role::Auditor => "auditor",
    }
}
