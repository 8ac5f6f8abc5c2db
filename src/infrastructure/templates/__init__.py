from infrastructure.templates.jinja_renderer import JinjaTemplateRenderer

__all__ = ["JinjaTemplateRenderer"]
