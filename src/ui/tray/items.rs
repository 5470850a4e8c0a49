//! The menu the view computes ([`Item`]s, plain data) as muda's items, each clickable entry
//! recorded with what it does.

use std::collections::HashMap;

use tray_icon::menu::{
    CheckMenuItem, IsMenuItem, Menu, MenuId, MenuItem, PredefinedMenuItem, Submenu,
};

use crate::ui::tray_menu::{Action, Item};

/// The menu of `items`, and its first entry when that is a line of text (the status line, whose
/// text changes in place); `actions` learns each clickable entry's id.
pub(super) fn build_menu(
    items: &[Item],
    actions: &mut HashMap<MenuId, Action>,
) -> (Menu, Option<MenuItem>) {
    let menu = Menu::new();
    let mut status = None;
    for (i, item) in items.iter().enumerate() {
        let built: Box<dyn IsMenuItem> = match item {
            Item::Label(text) if i == 0 => {
                let line = MenuItem::new(text, false, None);
                status = Some(line.clone());
                Box::new(line)
            }
            _ => build_item(item, actions),
        };
        if let Err(e) = menu.append(built.as_ref()) {
            tracing::warn!("tray menu: {e}");
        }
    }
    (menu, status)
}

fn build_item(item: &Item, actions: &mut HashMap<MenuId, Action>) -> Box<dyn IsMenuItem> {
    match item {
        Item::Label(text) => Box::new(MenuItem::new(text, false, None)),
        Item::Button {
            text,
            action,
            enabled,
        } => {
            let mi = MenuItem::new(text, *enabled, None);
            actions.insert(mi.id().clone(), action.clone());
            Box::new(mi)
        }
        Item::Check {
            text,
            action,
            checked,
        } => {
            let mi = CheckMenuItem::new(text, true, *checked, None);
            actions.insert(mi.id().clone(), action.clone());
            Box::new(mi)
        }
        Item::Submenu { text, items } => {
            let sm = Submenu::new(text, true);
            for i in items {
                let built = build_item(i, actions);
                if let Err(e) = sm.append(built.as_ref()) {
                    tracing::warn!("tray menu: {e}");
                }
            }
            Box::new(sm)
        }
        Item::Separator => Box::new(PredefinedMenuItem::separator()),
    }
}
