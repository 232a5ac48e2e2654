from django.http import HttpResponse
from django.urls import path


def index(request):
    return HttpResponse('<link rel="stylesheet" href="/static/css/site.css"><h1>django site</h1>')


urlpatterns = [path("", index)]
