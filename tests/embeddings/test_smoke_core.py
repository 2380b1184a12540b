import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from catalog import services as catalog_services
from catalog.models import ProductImage
from embeddings import runtime, selectors
from tests.conftest import make_image

pytestmark = pytest.mark.django_db(transaction=True)


def test_uploaded_product_is_found_by_its_own_image():
    red = catalog_services.product_create(
        title="Red circle tee", images=[SimpleUploadedFile("r.png", make_image((220, 20, 20)))]
    )
    blue = catalog_services.product_create(
        title="Blue square tee",
        images=[SimpleUploadedFile("b.png", make_image((20, 20, 220), shape="square"))],
    )
    statuses = set(ProductImage.objects.values_list("index_status", flat=True))
    assert statuses == {"indexed"}
    from embeddings.encoder import load_image

    hits = selectors.product_search(
        image=load_image(make_image((20, 20, 220), shape="square")), limit=5
    )
    assert [h.product.id for h in hits][:1] == [blue.id]
    assert {h.product.id for h in hits} == {red.id, blue.id}
    assert len(runtime.get_live_index()) == 2
    assert np.isclose(hits[0].score, 1.0, atol=1e-4)
