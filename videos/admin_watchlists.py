"""Admin pages of watch lists, cards and card photos. Writes go through videos.watchlist_services, as the API's
do, so matching follows every change made here; a card's page shows its photos and the events it matched."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from videos import watchlist_services
from videos.admin_pictures import PicturesAdminMixin, thumbnail_html, thumbnails_html
from videos.errors import ApiError
from videos.models import Card, CardPhoto, FaceEvent, WatchList

# Matched events shown on a card's page, the most similar first.
CARD_PAGE_EVENTS = 60


def _form_data(form: forms.ModelForm, m2m: str) -> dict:
    """The changed fields of an admin form, as the services take them (many-to-many fields as lists)."""
    data = {name: form.cleaned_data[name] for name in form.changed_data if name in form.cleaned_data}
    if m2m in data:
        data[m2m] = list(data[m2m])
    return data


@admin.register(WatchList)
class WatchListAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "swatch", "active", "threshold", "created_date"]
    list_display_links = ["id", "name"]
    list_filter = ["active"]
    search_fields = ["name"]
    filter_horizontal = ["camera_groups"]
    fields = ["name", "color", "comment", "active", "threshold", "camera_groups"]

    @admin.display(description=_("Color"))
    def swatch(self, obj: WatchList) -> str:
        return format_html('<span style="display:inline-block;width:1.5em;height:1em;background:#{}"></span> {}',
                           obj.color, obj.color)

    def save_model(self, request: HttpRequest, obj: WatchList, form, change: bool) -> None:
        pass  # save_related writes the row and its camera groups together, through the services

    def save_related(self, request: HttpRequest, form, formsets, change: bool) -> None:
        data = _form_data(form, "camera_groups")
        if change:  # (the form's instance already holds the new values: the service compares with the stored row)
            watchlist_services.watch_list_update(watch_list=WatchList.objects.get(pk=form.instance.pk), data=data)
        else:
            form.instance.pk = watchlist_services.watch_list_create(data=data).pk

    def delete_model(self, request: HttpRequest, obj: WatchList) -> None:
        watchlist_services.watch_list_delete(watch_list=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[WatchList]) -> None:
        for watch_list in queryset:
            watchlist_services.watch_list_delete(watch_list=watch_list)


class CardAdminForm(forms.ModelForm):
    photo = forms.FileField(required=False, label=_("Add a photo"),
                            help_text=_("A JPEG or PNG with exactly one face; it is detected and embedded as the API "
                                        "does."))

    class Meta:
        model = Card
        fields = ["name", "comment", "active", "watch_lists"]

    def clean_photo(self):
        photo = self.cleaned_data.get("photo")
        if photo is not None and photo.size > settings.FFV_DETECT_MAX_IMAGE_SIZE:
            raise forms.ValidationError(_("The photo is larger than the limit of %(limit)d bytes."),
                                        params={"limit": settings.FFV_DETECT_MAX_IMAGE_SIZE})
        return photo


@admin.register(Card)
class CardAdmin(admin.ModelAdmin):
    form = CardAdminForm
    list_display = ["id", "name", "active", "first_photo", "created_date"]
    list_display_links = ["id", "name"]
    list_filter = ["active", "watch_lists"]
    search_fields = ["name"]
    filter_horizontal = ["watch_lists"]
    readonly_fields = ["photo_gallery", "matched_events"]

    def get_fields(self, request: HttpRequest, obj: Card | None = None) -> list[str]:
        fields = ["name", "comment", "active", "watch_lists", "photo"]
        return fields + ["photo_gallery", "matched_events"] if obj is not None else fields

    @admin.display(description=_("Photo"))
    def first_photo(self, obj: Card) -> str:
        return thumbnail_html(obj.photos.order_by("id").first(), "image")

    @admin.display(description=_("Photos"))
    def photo_gallery(self, obj: Card) -> str:
        return thumbnails_html(obj.photos.order_by("id"), "image")

    @admin.display(description=_("Matched events"))
    def matched_events(self, obj: Card) -> str:
        events = (FaceEvent.objects.filter(matched_card=obj).defer("embedding")
                  .order_by("-match_confidence", "id")[:CARD_PAGE_EVENTS])
        return thumbnails_html(events)

    def save_model(self, request: HttpRequest, obj: Card, form, change: bool) -> None:
        pass  # save_related writes the card, its lists and its new photo, through the services

    def save_related(self, request: HttpRequest, form, formsets, change: bool) -> None:
        data = _form_data(form, "watch_lists")
        data.pop("photo", None)
        if change:  # (the form's instance already holds the new values: the service compares with the stored row)
            card = watchlist_services.card_update(card=Card.objects.get(pk=form.instance.pk), data=data)
        else:
            card = watchlist_services.card_create(data=data)
            form.instance.pk = card.pk
        photo = form.cleaned_data.get("photo")
        if photo is not None:
            try:
                watchlist_services.card_photo_add(card_id=card.pk, data=photo.read())
            except ApiError as exc:  # no face, several faces, too many photos: the card is kept, the photo not
                messages.error(request, _("The photo was not added: %(reason)s") % {"reason": exc.desc})

    def delete_model(self, request: HttpRequest, obj: Card) -> None:
        watchlist_services.card_delete(card=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Card]) -> None:
        for card in queryset:
            watchlist_services.card_delete(card=card)


@admin.register(CardPhoto)
class CardPhotoAdmin(PicturesAdminMixin, admin.ModelAdmin):
    """Read-only (photos are added on their card's page or over the API); deleting one re-matches its card."""

    picture_fields = ("image",)
    list_display = ["id", "picture", "card", "quality", "created_date"]
    list_display_links = ["id", "picture"]
    list_select_related = ["card"]
    readonly_fields = ["picture", "card", "quality", "confidence", "created_date"]
    fields = readonly_fields

    @admin.display(description=_("Photo"))
    def picture(self, obj: CardPhoto) -> str:
        return thumbnail_html(obj, "image")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: CardPhoto | None = None) -> bool:
        return False

    def delete_model(self, request: HttpRequest, obj: CardPhoto) -> None:
        watchlist_services.card_photo_delete(photo=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[CardPhoto]) -> None:
        for photo in queryset:
            watchlist_services.card_photo_delete(photo=photo)
