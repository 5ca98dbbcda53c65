# Make logic of the onair br2-external tree: only the package recipes.
include $(sort $(wildcard $(BR2_EXTERNAL_ONAIR_PATH)/package/*/*.mk))
