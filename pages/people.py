"""People: projects and their collaborators for everyone; the instance's users for admins."""

from core import ui
from core.ui import auth
from core.ui import people as ui_people

ui.header("People", "Projects, who works on them, and (for admins) every account.")
store = ui.get_store()
ui_people.projects_panel(store)
if auth.account().is_admin:
    ui_people.users_panel(store)
