include $(sort $(wildcard $(BR2_EXTERNAL_UPKEEP_PATH)/package/*/*.mk))
