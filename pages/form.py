"""A deployment's prediction form (`/form?name=…`): fill in one row, see the prediction, its
probabilities and why. Public deployments' forms need no login; the others obey their access
level."""

from core import ui
from core.ui import form as ui_form

ui.header("Prediction form")
ui_form.form_page(ui.get_store())
